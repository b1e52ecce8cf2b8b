package jobs

import "log/slog"

// Deps are what the built-in kinds need from the binary that runs them.
type Deps struct {
	Logger *slog.Logger
}

// Builtin returns errand's built-in kinds.
func Builtin(d Deps) []Kind {
	return []Kind{
		Ping(),
	}
}
