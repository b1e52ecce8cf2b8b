// Command errand is the errand daemon and its command line. It is the thin
// example of a binary built on errand: a team's own main looks the same and
// passes errand.WithKinds(...) for its own kinds.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/errand-dev/errand"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := errand.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "errand:", err)
		if errors.Is(err, errand.ErrUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
