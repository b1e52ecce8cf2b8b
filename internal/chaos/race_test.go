//go:build race

package chaos

// Under `go test -race` the errand-chaos processes are race-instrumented too.
func init() { buildFlags = append(buildFlags, "-race") }
