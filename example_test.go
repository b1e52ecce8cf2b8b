package errand_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/jobs"
)

// GreetingArgs are the args of the example's kind.
type GreetingArgs struct {
	Name string `json:"name" errand:"required"` // refused at INSERT when missing
}

// greetingKind is a team's own kind, defined outside errand: it has its own
// queue (two workers per replica unless ERRAND_QUEUES says otherwise), its
// own environment variable (listed by `errand help`, checked at start), its
// own HTTP route on the daemon's address, and writes in its job's workspace
// in the transaction that completes the job. It is built in a function so each
// daemon gets its own state.
func greetingKind() jobs.Kind {
	var (
		mu     sync.Mutex
		prefix string
		last   string
	)
	return jobs.Define("greeting.send", "greetings",
		func(ctx context.Context, job *jobs.Job, args GreetingArgs) error {
			return job.CompleteInWorkspace(ctx, func(tx pgx.Tx) error {
				var workspace string
				if err := tx.QueryRow(ctx, `SELECT name FROM errand.workspaces`).Scan(&workspace); err != nil {
					return err // row level security: only the job's own workspace is visible
				}
				mu.Lock()
				defer mu.Unlock()
				last = fmt.Sprintf("%s, %s, from %s", prefix, args.Name, workspace)
				return nil
			})
		},
		jobs.WithEnv(jobs.EnvVar{
			Name: "GREETING_PREFIX", Default: "Hello", Help: "how greetings start",
			Check: func(v string) error {
				if strings.ContainsAny(v, "\r\n") {
					return errors.New("want one line")
				}
				return nil
			},
		}),
		jobs.WithSetup(func(ctx context.Context, s *jobs.Setup) error {
			prefix = s.Env.Get("GREETING_PREFIX")
			s.Handle("GET /greetings/last", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				fmt.Fprintln(w, last)
			}))
			return nil
		}),
		jobs.WithQueueWorkers(2),
		jobs.WithTimeout(10*time.Second))
}

// A team's binary registers its own kind beside errand's; here it is
// migrated, run, sent a job with plain SQL, and asked through its own route.
func Example_ownKind() {
	ctx := context.Background()
	url, drop, err := errandtest.ExampleDatabase()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer drop()
	env := map[string]string{
		"DATABASE_URL":     url,
		"ERRAND_HTTP_ADDR": "127.0.0.1:0",
		"GREETING_PREFIX":  "Hi",
		"ERRAND_LOG_LEVEL": "error",
		// No Resend key in an example: emails would be captured, not sent.
		"ERRAND_EMAIL_CAPTURE": "true",
	}
	getenv := func(k string) string { return env[k] }
	kind := errand.WithKinds(greetingKind())

	// `errand migrate` publishes the kind, so the SQL contract knows it.
	if err := errand.Main(ctx, []string{"migrate"}, getenv, io.Discard, os.Stderr, kind); err != nil {
		fmt.Println(err)
		return
	}
	// `errand run`, until ctx is cancelled (SIGTERM in a real binary).
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- errand.Main(runCtx, []string{"run"}, getenv, io.Discard, os.Stderr, kind,
			errand.WithReady(func(addr string) { ready <- addr }))
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		fmt.Println("errand run stopped:", err)
		return
	}

	// The app enqueues with one INSERT, in any language.
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close(ctx)
	var ws string
	var id int64
	_ = conn.QueryRow(ctx, `INSERT INTO errand.workspaces (name, slug) VALUES ('Acme', 'acme') RETURNING id`).Scan(&ws)
	_ = conn.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'greeting.send', '{"name": "Ann"}') RETURNING id`, ws).Scan(&id)
	_, err = conn.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'greeting.send', '{}')`, ws)
	fmt.Println(err)

	var status string
	for deadline := time.Now().Add(60 * time.Second); status != "completed" && status != "failed"; {
		if time.Now().After(deadline) {
			fmt.Println("the job is still", status, "after 60 s")
			return
		}
		time.Sleep(10 * time.Millisecond)
		if err := conn.QueryRow(ctx, `SELECT status FROM errand.jobs WHERE id = $1`, id).Scan(&status); err != nil {
			fmt.Println(err)
			return
		}
	}
	fmt.Println(status)

	resp, err := http.Get("http://" + addr + "/greetings/last")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(string(body))
	_ = conn.QueryRow(ctx, `SELECT queue FROM errand.jobs WHERE id = $1`, id).Scan(&status)
	fmt.Println("queue", status)

	stop()
	fmt.Println(<-done)
	// Output:
	// ERROR: errand: args for kind "greeting.send" are missing required field(s): name (SQLSTATE 22023)
	// completed
	// Hi, Ann, from Acme
	// queue greetings
	// <nil>
}
