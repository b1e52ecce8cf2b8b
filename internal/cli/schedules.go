package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/errand-dev/errand/internal/config"
	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/migrations"
	"github.com/errand-dev/errand/schedules"
	"github.com/errand-dev/errand/store"
)

// schedulesHelp is added to `errand help` (the commands and the table's own
// variables; config lists the rest).
func schedulesHelp() string {
	return `
Schedules:
  schedules list [--at T]                     each schedule entry with its next three times (after T, RFC 3339; default now)
  schedules tick --at T [--schedule NAME] [--future]
                                              enqueue each entry's period as of T unless it ran or has nothing to do
                                              (backfill); NAME also runs an entry that is off; a T later than the
                                              database's clock is refused without --future (tests, rehearsals)

Schedule variables:
` + schedules.Help()
}

// runSchedules is `errand schedules list|tick`.
func runSchedules(ctx context.Context, cfg config.Config, kinds []jobs.Kind, args []string, stdout io.Writer) error {
	table, err := schedules.Load(cfg.Getenv, kinds)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	if len(args) == 0 {
		return fmt.Errorf("%w: errand schedules list [--at T] | errand schedules tick --at T [--schedule NAME] [--future]", ErrUsage)
	}
	if isHelp(args[0]) {
		_, err := io.WriteString(stdout, "Usage: errand schedules COMMAND [flags]\n"+schedulesHelp())
		return err
	}
	if args[0] != "list" && args[0] != "tick" {
		return fmt.Errorf("%w: unknown schedules command %q (list, tick)", ErrUsage, args[0])
	}
	fs := flag.NewFlagSet("schedules "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	atText := fs.String("at", "", "RFC 3339 time")
	only := fs.String("schedule", "", "one entry")
	future := fs.Bool("future", false, "tick at a time still to come")
	if err := fs.Parse(args[1:]); errors.Is(err, flag.ErrHelp) {
		// The command's lines of `errand help` and its flags.
		fmt.Fprintf(stdout, "Usage: errand schedules %s [flags]\n%s\nFlags:\n", args[0], helpSection(schedulesHelp(), "schedules "+args[0]))
		fs.SetOutput(stdout)
		if args[0] == "list" { // list takes --at alone
			fs = flag.NewFlagSet("schedules list", flag.ContinueOnError)
			fs.SetOutput(stdout)
			fs.String("at", "", "RFC 3339 time: the next times after it (default now)")
		}
		fs.PrintDefaults()
		return nil
	} else if err != nil {
		return fmt.Errorf("%w: schedules %s: %v (errand schedules %s --help lists its flags)", ErrUsage, args[0], err, args[0])
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: schedules %s: unexpected %q", ErrUsage, args[0], fs.Args())
	}
	at := time.Now()
	if *atText != "" {
		if at, err = time.Parse(time.RFC3339, *atText); err != nil {
			return fmt.Errorf("%w: --at %q is not an RFC 3339 time such as 2026-11-27T08:00:00+01:00", ErrUsage, *atText)
		}
	}
	switch args[0] {
	case "list":
		if *only != "" || *future {
			return fmt.Errorf("%w: schedules list takes no --schedule or --future", ErrUsage)
		}
		return listSchedules(table, at, stdout)
	default: // tick (the command was checked above)
		if *atText == "" {
			return fmt.Errorf("%w: schedules tick needs --at <RFC 3339 time>", ErrUsage)
		}
		if cfg.DatabaseURL == "" {
			return fmt.Errorf("DATABASE_URL is not set")
		}
		return tickSchedules(ctx, cfg, table, at, *only, *future, stdout)
	}
}

func listSchedules(table *schedules.Table, at time.Time, stdout io.Writer) error {
	entries := table.Entries()
	if len(entries) == 0 {
		return schedules.ErrNoSchedules
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tKIND\tSCHEDULE\tNEXT")
	for _, e := range entries {
		spec := e.Spec
		if e.Off {
			spec = "off (default " + e.Default + ")"
		} else if e.Spec != e.Default {
			spec += " (ERRAND_SCHEDULES; default " + e.Default + ")"
		}
		next := "-"
		for i, t := range e.Next(at, 3) {
			if i == 0 {
				next = ""
			} else {
				next += ", "
			}
			next += t.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", e.Name, e.Kind, spec, next)
	}
	return w.Flush()
}

// futureSlack is how far past the database's clock --at may be without
// --future: a hand-typed "now" a few seconds ahead is not a mistake.
const futureSlack = time.Minute

func tickSchedules(ctx context.Context, cfg config.Config, table *schedules.Table, at time.Time, only string, future bool, stdout io.Writer) error {
	st, err := store.Open(ctx, cfg.DatabaseURL, store.Options{MaxConns: 2, SkipScopeCheck: true})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := migrations.Check(ctx, st.Pool()); err != nil {
		return err
	}
	// A tick records its periods as run (and a usage report as built, a
	// digest's next time as moved past at): one in the future would make
	// the leader skip them when they come. Against the database's clock,
	// which the leader's ticks also read.
	if !future {
		now, err := store.Now(ctx, st)
		if err != nil {
			return err
		}
		if at.After(now.Add(futureSlack)) {
			return fmt.Errorf("%w: --at %s is %s after the database's clock (%s): a tick records its periods as run, so a time still to come would be skipped when it comes; pass --future to tick there anyway (tests, rehearsals on a scratch database)",
				ErrUsage, at.Format(time.RFC3339), at.Sub(now).Round(time.Second), now.UTC().Format(time.RFC3339))
		}
	}
	// An insert-only River client: no workers, no queues.
	client, err := river.NewClient(riverpgxv5.New(st.Pool()), &river.Config{Schema: migrations.Schema})
	if err != nil {
		return fmt.Errorf("river client: %w", err)
	}
	results, err := table.Tick(ctx, client, st, at, only)
	for _, r := range results {
		line := fmt.Sprintf("%s\t%s\t%s", r.Schedule, r.Period.Format(time.RFC3339), r.Status)
		if r.JobID != 0 {
			line += fmt.Sprintf("\tjob %d", r.JobID)
		}
		fmt.Fprintln(stdout, line)
	}
	return err
}
