// Package opstest tests errand's operations end to end: pausing a
// workspace with real daemons (one and two replicas on one database), and
// the `errand jobs`, `errand workspaces` and `errand stats` commands through
// errand.Main, each user mistake by name. It has no code of its own.
package opstest
