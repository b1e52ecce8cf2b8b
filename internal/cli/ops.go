package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/errand-dev/errand/internal/config"
	"github.com/errand-dev/errand/migrations"
	"github.com/errand-dev/errand/store"
)

// The ops commands: `errand jobs`, `errand workspaces` and `errand stats`.
// They run store's queries and errand's SQL functions (store/ops.go,
// migrations/016_operations.sql), print a table or, with --json, JSON.

// opsHelp is added to `errand help`.
func opsHelp() string {
	return `
Operations (same DATABASE_URL; --json for JSON instead of a table):
  jobs list [--workspace W] [--kind K] [--status S] [--limit N] [--before ID]
                                              newest first; S: pending, processing, completed, failed
  jobs show ID                                one job: args and every attempt's error
  jobs retry ID                               run a failed job again
  jobs retry --workspace W --status failed    run every failed job of a workspace again
  jobs cancel ID                              cancel a job that has not finished
  workspaces list [--limit N]                 plan, weight, cap, pending, processing and failed jobs per workspace; paused ones first
  workspaces pause W                          its jobs wait (no attempt used) until resume; running ones finish
  workspaces resume W                         its held jobs run again
  stats                                       per queue: backlog (held: by paused workspaces), oldest due job,
                                              finished in the last hour, throughput; every configured queue
                                              is listed, at 0 when it has no jobs
` + workspaceNote + `  (--help after a command lists its flags)
`
}

const workspaceNote = "  (W: a workspace's id or slug)\n"

// helpSection is the lines of a help text about the commands that start
// with prefix ("jobs", "jobs retry", "schedules tick", "migrate"), each with
// its continuation lines: a command's --help says what `errand help` says.
func helpSection(text, prefix string) string {
	var b strings.Builder
	in := false
	for line := range strings.Lines(text) {
		switch {
		case strings.HasPrefix(line, "  "+prefix+" ") || strings.TrimSpace(line) == prefix:
			in = true
		case !strings.HasPrefix(line, "    "): // not a continuation
			in = false
		}
		if in {
			b.WriteString(line)
		}
	}
	return b.String()
}

// opsSection is helpSection of opsHelp, with what W stands for when a
// command takes one.
func opsSection(prefix string) string {
	s := helpSection(opsHelp(), prefix)
	if strings.Contains(s, " W") {
		s += workspaceNote
	}
	return s
}

// isHelp is an argument asking for help instead of a command.
func isHelp(arg string) bool { return arg == "-h" || arg == "--help" || arg == "help" }

// groupHelp is `errand jobs --help` (or workspaces): the group's commands.
func groupHelp(stdout io.Writer, group string) error {
	_, err := fmt.Fprintf(stdout, "Usage: errand %s COMMAND [flags] (--json for JSON instead of a table)\n\n%s\nerrand %s COMMAND --help lists a command's flags.\n",
		group, opsSection(group), group)
	return err
}

// helped is a command's result, with its --help (flag.ErrHelp, the usage
// printed) as success: the usage is what was asked for.
func helped(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// opsFlags is a command's flag set, parsed with flags and arguments in any
// order (`jobs show 42 --json`).
type opsFlags struct {
	*flag.FlagSet
	json   bool
	args   []string
	stdout io.Writer // where --help prints
}

func newOpsFlags(name string, stdout io.Writer) *opsFlags {
	f := &opsFlags{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), stdout: stdout}
	// The flag package's own messages are returned as errors instead, and
	// --help is printed by help, to stdout.
	f.SetOutput(io.Discard)
	f.BoolVar(&f.json, "json", false, "JSON output instead of a table")
	return f
}

// parse reads the flags and arguments. After -h or --help it has printed the
// command's usage and returns flag.ErrHelp, which Main turns into success.
func (f *opsFlags) parse(args []string) error {
	for {
		err := f.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			return f.help()
		}
		if err != nil {
			return fmt.Errorf("%w: %s: %v (errand %s --help lists its flags)", ErrUsage, f.Name(), err, f.Name())
		}
		if f.NArg() == 0 {
			return nil
		}
		f.args = append(f.args, f.Arg(0))
		args = f.Args()[1:]
	}
}

// help prints the command's lines of `errand help` and its flags, and
// returns flag.ErrHelp.
func (f *opsFlags) help() error {
	fmt.Fprintf(f.stdout, "Usage: errand %s [flags]\n\n%s\nFlags:\n", f.Name(), opsSection(f.Name()))
	f.SetOutput(f.stdout)
	defer f.SetOutput(io.Discard)
	f.PrintDefaults()
	return flag.ErrHelp
}

// positional checks the command got exactly the arguments named.
func (f *opsFlags) positional(names ...string) error {
	if len(f.args) != len(names) {
		want := "no arguments"
		if len(names) > 0 {
			want = strings.Join(names, " ")
		}
		got := "none"
		if len(f.args) > 0 {
			got = fmt.Sprintf("%q", f.args)
		}
		return fmt.Errorf("%w: %s takes %s, got %s", ErrUsage, f.Name(), want, got)
	}
	return nil
}

// jobID is the command's one argument, a job id.
func (f *opsFlags) jobID() (int64, error) {
	if err := f.positional("ID"); err != nil {
		return 0, err
	}
	return parseJobID(f.args[0])
}

// withOps runs fn on a connection to DATABASE_URL, closed afterwards.
func withOps(ctx context.Context, cfg config.Config, fn func(st *store.Store) error) error {
	st, err := openOps(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(st)
}

func parseJobID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%w: a job id is a positive number, got %q", ErrUsage, s)
	}
	return id, nil
}

// openOps connects for one command and checks the schema is migrated.
func openOps(ctx context.Context, cfg config.Config) (*store.Store, error) {
	if cfg.DatabaseURL == "" {
		return nil, errors.New("DATABASE_URL is not set")
	}
	st, err := store.Open(ctx, cfg.DatabaseURL, store.Options{MaxConns: 2, SkipScopeCheck: true})
	if err != nil {
		return nil, err
	}
	if err := migrations.Check(ctx, st.Pool()); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// runJobs is `errand jobs list|show|retry|cancel`.
func runJobs(ctx context.Context, cfg config.Config, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: errand jobs list|show|retry|cancel (errand jobs --help lists them)", ErrUsage)
	}
	if isHelp(args[0]) {
		return groupHelp(stdout, "jobs")
	}
	f := newOpsFlags("jobs "+args[0], stdout)
	switch args[0] {
	case "list":
		ws := f.String("workspace", "", "workspace id or slug")
		kind := f.String("kind", "", "kind")
		status := f.String("status", "", "pending, processing, completed or failed")
		limit := f.Int("limit", 50, "at most this many, 1 to 1000")
		before := f.Int64("before", 0, "only jobs with a smaller id (the next page)")
		if err := f.parse(args[1:]); err != nil {
			return err
		}
		if err := f.positional(); err != nil {
			return err
		}
		switch *status {
		case "", store.StatusPending, store.StatusProcessing, store.StatusCompleted, store.StatusFailed:
		default:
			return fmt.Errorf("%w: --status %q: want pending, processing, completed or failed", ErrUsage, *status)
		}
		if *limit < 1 || *limit > 1000 {
			return fmt.Errorf("%w: --limit %d: want 1 to 1000", ErrUsage, *limit)
		}
		if *before < 0 {
			return fmt.Errorf("%w: --before %d: want a job id", ErrUsage, *before)
		}
		st, err := openOps(ctx, cfg)
		if err != nil {
			return err
		}
		defer st.Close()
		filter := store.JobFilter{Kind: *kind, Status: *status, Limit: *limit, BeforeID: *before}
		if *ws != "" {
			if filter.WorkspaceID, err = store.ResolveWorkspace(ctx, st, *ws); err != nil {
				return err
			}
		}
		list, err := store.Jobs(ctx, st, filter)
		if err != nil {
			return err
		}
		return printJobs(stdout, list, f.json)
	case "show":
		if err := f.parse(args[1:]); err != nil {
			return err
		}
		id, err := f.jobID()
		if err != nil {
			return err
		}
		return withOps(ctx, cfg, func(st *store.Store) error {
			d, err := store.GetJob(ctx, st, id)
			if err != nil {
				return err
			}
			return printJob(stdout, d, f.json)
		})
	case "retry":
		ws := f.String("workspace", "", "workspace id or slug")
		status := f.String("status", "", "failed (the only status retried)")
		if err := f.parse(args[1:]); err != nil {
			return err
		}
		if *ws == "" {
			if *status != "" {
				return fmt.Errorf("%w: jobs retry: --status goes with --workspace (jobs retry --workspace W --status failed)", ErrUsage)
			}
			if err := f.positional("ID"); err != nil {
				return fmt.Errorf("%w (or --workspace W --status failed)", err)
			}
			id, err := parseJobID(f.args[0])
			if err != nil {
				return err
			}
			return withOps(ctx, cfg, func(st *store.Store) error {
				state, err := store.RetryJob(ctx, st, id)
				if err != nil {
					return err
				}
				return printResult(stdout, f.json, map[string]any{"job_id": id, "result": state},
					map[string]string{"queued": fmt.Sprintf("job %d will run again\n", id),
						"paused": fmt.Sprintf("job %d will run again when its workspace is resumed (it is paused)\n", id)}[state])
			})
		}
		if len(f.args) > 0 {
			return fmt.Errorf("%w: jobs retry takes a job id or --workspace W --status failed, not both", ErrUsage)
		}
		if *status != store.StatusFailed {
			return fmt.Errorf("%w: jobs retry --workspace needs --status failed (only failed jobs are retried), got %q", ErrUsage, *status)
		}
		st, err := openOps(ctx, cfg)
		if err != nil {
			return err
		}
		defer st.Close()
		wsID, err := store.ResolveWorkspace(ctx, st, *ws)
		if err != nil {
			return err
		}
		n, paused, err := store.RetryFailed(ctx, st, wsID)
		if err != nil {
			return err
		}
		text := fmt.Sprintf("%d failed job(s) of workspace %s will run again\n", n, wsID)
		if paused {
			text = fmt.Sprintf("%d failed job(s) of workspace %s will run again when it is resumed (it is paused)\n", n, wsID)
		}
		return printResult(stdout, f.json, map[string]any{"workspace_id": wsID, "retried": n, "paused": paused}, text)
	case "cancel":
		if err := f.parse(args[1:]); err != nil {
			return err
		}
		id, err := f.jobID()
		if err != nil {
			return err
		}
		return withOps(ctx, cfg, func(st *store.Store) error {
			state, err := store.CancelJob(ctx, st, id)
			if err != nil {
				return err
			}
			return printResult(stdout, f.json, map[string]any{"job_id": id, "result": state},
				map[string]string{"cancelled": fmt.Sprintf("job %d cancelled\n", id),
					"cancelling": fmt.Sprintf("job %d is running: asked to stop; it is cancelled when its attempt returns\n", id)}[state])
		})
	default:
		return fmt.Errorf("%w: unknown jobs command %q (list, show, retry, cancel)", ErrUsage, args[0])
	}
}

// runWorkspaces is `errand workspaces list|pause|resume`.
func runWorkspaces(ctx context.Context, cfg config.Config, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: errand workspaces list|pause W|resume W (errand workspaces --help lists them)", ErrUsage)
	}
	if isHelp(args[0]) {
		return groupHelp(stdout, "workspaces")
	}
	f := newOpsFlags("workspaces "+args[0], stdout)
	switch args[0] {
	case "list":
		limit := f.Int("limit", 100, "at most this many, 1 to 10000")
		if err := f.parse(args[1:]); err != nil {
			return err
		}
		if err := f.positional(); err != nil {
			return err
		}
		if *limit < 1 || *limit > 10000 {
			return fmt.Errorf("%w: --limit %d: want 1 to 10000", ErrUsage, *limit)
		}
		st, err := openOps(ctx, cfg)
		if err != nil {
			return err
		}
		defer st.Close()
		list, err := store.Workspaces(ctx, st, *limit)
		if err != nil {
			return err
		}
		if f.json {
			return writeJSON(stdout, list)
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "WORKSPACE\tSLUG\tNAME\tPAUSED\tPLAN\tWEIGHT\tCAP\tPENDING\tPROCESSING\tFAILED")
		for _, ws := range list {
			paused := "-"
			if ws.PausedAt != nil {
				paused = "since " + ws.PausedAt.UTC().Format(time.RFC3339)
			}
			limit := "default" // ERRAND_WORKSPACE_CONCURRENCY
			if ws.Concurrency != nil {
				limit = strconv.Itoa(*ws.Concurrency)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%d\n", ws.WorkspaceID, ws.Slug, ws.Name, paused,
				ws.Plan, ws.Weight, limit, ws.Pending, ws.Processing, ws.Failed)
		}
		return w.Flush()
	case "pause", "resume":
		if err := f.parse(args[1:]); err != nil {
			return err
		}
		if err := f.positional("W"); err != nil {
			return err
		}
		st, err := openOps(ctx, cfg)
		if err != nil {
			return err
		}
		defer st.Close()
		wsID, err := store.ResolveWorkspace(ctx, st, f.args[0])
		if err != nil {
			return err
		}
		if args[0] == "pause" {
			n, err := store.PauseWorkspace(ctx, st, wsID)
			if err != nil {
				return err
			}
			return printResult(stdout, f.json, map[string]any{"workspace_id": wsID, "paused": true, "held": n},
				fmt.Sprintf("workspace %s paused (%d waiting job(s) held; running ones finish their attempt)\n", wsID, n))
		}
		n, err := store.ResumeWorkspace(ctx, st, wsID)
		if err != nil {
			return err
		}
		return printResult(stdout, f.json, map[string]any{"workspace_id": wsID, "paused": false, "released": n},
			fmt.Sprintf("workspace %s resumed (%d held job(s) released)\n", wsID, n))
	default:
		return fmt.Errorf("%w: unknown workspaces command %q (list, pause, resume)", ErrUsage, args[0])
	}
}

// runStats is `errand stats`.
func runStats(ctx context.Context, cfg config.Config, args []string, stdout io.Writer) error {
	f := newOpsFlags("stats", stdout)
	if err := f.parse(args); err != nil {
		return err
	}
	if err := f.positional(); err != nil {
		return err
	}
	st, err := openOps(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	list, err := store.Stats(ctx, st)
	if err != nil {
		return err
	}
	// Every queue of the configuration (errand's and the kinds' own) at 0
	// when it has no jobs, as the metrics show them: a drained queue reads
	// 0, not absent (an empty database printed the header alone). A queue
	// only the database knows (a kind no binary declares now) stays listed.
	for q := range cfg.Queues {
		if !slices.ContainsFunc(list, func(s store.QueueStats) bool { return s.Queue == q }) {
			list = append(list, store.QueueStats{Queue: q})
		}
	}
	slices.SortFunc(list, func(a, b store.QueueStats) int { return strings.Compare(a.Queue, b.Queue) })
	if f.json {
		type queueJSON struct {
			store.QueueStats
			OldestDueSeconds float64 `json:"oldest_due_seconds"`
		}
		out := make([]queueJSON, len(list))
		for i, q := range list {
			out[i] = queueJSON{q, q.OldestDue.Seconds()}
		}
		return writeJSON(stdout, out)
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "QUEUE\tPENDING\tHELD\tDUE\tPROCESSING\tOLDEST DUE\tCOMPLETED 1H\tFAILED 1H\tPER SECOND (1M)")
	for _, q := range list {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%s\t%d\t%d\t%.2f\n", q.Queue, q.Pending, q.Held, q.Due, q.Processing,
			q.OldestDue.Round(time.Millisecond), q.CompletedLastHour, q.FailedLastHour, q.PerSecond)
	}
	return w.Flush()
}

func printResult(stdout io.Writer, asJSON bool, v any, text string) error {
	if asJSON {
		return writeJSON(stdout, v)
	}
	_, err := io.WriteString(stdout, text)
	return err
}

// jobJSON is a job as --json prints it (the columns of errand.jobs).
type jobJSON struct {
	ID          int64      `json:"id"`
	WorkspaceID *string    `json:"workspace_id"` // null for errand's own jobs (a schedule's tick)
	Kind        string     `json:"kind"`
	Queue       string     `json:"queue"`
	Status      string     `json:"status"`
	Attempt     int        `json:"attempt"`
	MaxAttempts int        `json:"max_attempts"`
	LastError   string     `json:"last_error"`
	RunAt       time.Time  `json:"run_at"`
	CreatedAt   time.Time  `json:"created_at"`
	StartedAt   *time.Time `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at"`
}

func toJSON(j store.Job) jobJSON {
	var ws *string
	if j.WorkspaceID != "" {
		ws = &j.WorkspaceID
	}
	return jobJSON{j.ID, ws, j.Kind, j.Queue, j.Status, j.Attempt, j.MaxAttempts, j.LastError,
		j.RunAt, j.CreatedAt, j.StartedAt, j.FinishedAt}
}

func printJobs(stdout io.Writer, list []store.Job, asJSON bool) error {
	if asJSON {
		out := make([]jobJSON, len(list))
		for i, j := range list {
			out[i] = toJSON(j)
		}
		return writeJSON(stdout, out)
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tWORKSPACE\tKIND\tQUEUE\tSTATUS\tATTEMPT\tCREATED\tLAST ERROR")
	for _, j := range list {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", j.ID, cmp.Or(j.WorkspaceID, "-"), j.Kind, j.Queue, j.Status,
			j.Attempt, j.MaxAttempts, j.CreatedAt.UTC().Format(time.RFC3339), oneLine(j.LastError, 80))
	}
	return w.Flush()
}

func printJob(stdout io.Writer, d store.JobDetail, asJSON bool) error {
	if asJSON {
		return writeJSON(stdout, struct {
			jobJSON
			Priority   int             `json:"priority"`
			RiverState string          `json:"river_state"`
			Paused     bool            `json:"paused"`
			Args       json.RawMessage `json:"args"`
			Errors     []store.Attempt `json:"errors"`
		}{toJSON(d.Job), d.Priority, d.RiverState, d.Paused, d.Args, d.Errors})
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	status := d.Status
	if d.Paused {
		status += " (held: its workspace is paused)"
	}
	at := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	for _, kv := range [][2]string{
		{"id", strconv.FormatInt(d.ID, 10)},
		{"workspace", cmp.Or(d.WorkspaceID, "- (errand's own job: no workspace)")},
		{"kind", d.Kind},
		{"queue", d.Queue},
		{"status", status},
		{"river state", d.RiverState},
		{"attempt", fmt.Sprintf("%d of %d", d.Attempt, d.MaxAttempts)},
		{"priority", strconv.Itoa(d.Priority)},
		{"created", d.CreatedAt.UTC().Format(time.RFC3339Nano)},
		{"run at", d.RunAt.UTC().Format(time.RFC3339Nano)},
		{"started", at(d.StartedAt)},
		{"finished", at(d.FinishedAt)},
	} {
		fmt.Fprintf(w, "%s:\t%s\n", kv[0], kv[1])
	}
	if err := w.Flush(); err != nil {
		return err
	}
	args, err := json.MarshalIndent(d.Args, "  ", "  ")
	if err != nil {
		args = d.Args
	}
	fmt.Fprintf(stdout, "args:\n  %s\n", args)
	if len(d.Errors) == 0 {
		_, err := fmt.Fprintln(stdout, "errors: none")
		return err
	}
	fmt.Fprintln(stdout, "errors:")
	for _, e := range d.Errors {
		fmt.Fprintf(stdout, "  attempt %d at %s: %s\n", e.Attempt, e.At.UTC().Format(time.RFC3339Nano), e.Error)
	}
	return nil
}

// oneLine is s on one line, cut to n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
