package digest

// Tick is the digests schedule's tick, for the benchmark.
var Tick = tick
