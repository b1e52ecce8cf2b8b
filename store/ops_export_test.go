package store

// Stats' own queries, for their plan test.
const FinishedByQueueSQL = finishedByQueueSQL
