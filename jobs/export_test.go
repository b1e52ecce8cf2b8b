package jobs

// SnoozeFor is snoozeFor, for jobs_test.
var SnoozeFor = snoozeFor
