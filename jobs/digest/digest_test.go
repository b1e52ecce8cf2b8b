package digest_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/errand-dev/errand/errandtest"
)

// Three daemons on one database, ticks repeated and concurrent, each one
// twice within the period and again five minutes later: exactly one digest
// per user and period, every notification in exactly one digest.
func TestOneDigestPerUserPerPeriodWithThreeDaemons(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	for range 3 {
		errandtest.StartDaemon(t, url, daemonEnv)
	}
	zones := []string{"Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"}
	type member struct{ ws, id string }
	var users []member
	for w := range 3 {
		ws := errandtest.NewWorkspace(t, pool, fmt.Sprintf("ws%d", w))
		for u := range 8 {
			id := newUser(t, pool, ws, fmt.Sprintf("u%d-%d@example.com", w, u), "daily", zones[(w+u)%len(zones)], 8, 1)
			users = append(users, member{ws, id})
		}
	}
	// Every user's 08:00 of 2030-01-10 has passed by 23:00 UTC that day
	// (Lord Howe's 08:00 of the 11th has too: 21:00 UTC on the 10th).
	start := time.Date(2030, 1, 9, 23, 0, 0, 0, time.UTC)
	tick(t, url, pool, start) // moves everyone's schedule into 2030
	exec(t, pool, `DELETE FROM errand.river_job`)

	for day := 1; day <= 2; day++ {
		for _, u := range users {
			notify(t, pool, u.ws, u.id, fmt.Sprintf("first of day %d", day))
			notify(t, pool, u.ws, u.id, fmt.Sprintf("second of day %d", day))
		}
		at := start.AddDate(0, 0, day)
		var wg sync.WaitGroup
		errs := make(chan error, 9)
		for g := range 3 {
			wg.Go(func() {
				for _, d := range []time.Duration{0, time.Minute, 5 * time.Minute} {
					if out, err := tickAt(url, at.Add(d+time.Duration(g)*time.Second)); err != nil {
						errs <- fmt.Errorf("%v: %s", err, out)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		waitIdle(t, pool)

		if n := count(t, pool, `SELECT count(*) FROM errand.jobs WHERE kind = 'digest.send'`); n != len(users)*day {
			t.Errorf("day %d: %d digest jobs, want %d", day, n, len(users)*day)
		}
		if n := count(t, pool, `SELECT count(DISTINCT (workspace_id, args)) FROM errand.jobs WHERE kind = 'digest.send'`); n != len(users)*day {
			t.Errorf("day %d: %d distinct digests", day, n)
		}
		es := digestEmails(t, pool)
		if len(es) != len(users)*day {
			t.Errorf("day %d: %d digest emails, want %d", day, len(es), len(users)*day)
		}
		per := map[string]int{}
		for _, e := range es {
			per[e.To+" "+e.Subject]++
			if !strings.HasPrefix(e.Subject, "2 new in WS") {
				t.Errorf("digest %q", e.Subject)
			}
		}
		for k, n := range per {
			if n != 1 {
				t.Errorf("%s: %d emails", k, n)
			}
		}
		if n := count(t, pool, `SELECT count(*) FROM errand.notifications WHERE digested_at IS NULL`); n != 0 {
			t.Errorf("day %d: %d notifications left out", day, n)
		}
	}
	// However the concurrent ticks interleaved (a later period may run
	// while an earlier one is still being worked, and find nothing), every
	// user was enqueued once per day, plus once by the first tick.
	if n := count(t, pool, `SELECT sum(enqueued) FROM errand.schedule_runs WHERE name = 'digests'`); n != len(users)*3 {
		t.Errorf("%d digests enqueued by all periods, want %d", n, len(users)*3)
	}
}

// After downtime one digest is sent for the latest period, with everything
// that waited, not one per missed day; a period missed by more than
// ERRAND_DIGEST_BACKFILL is not sent, and its notifications go with the
// next digest.
func TestBackfillSendsOneDigestNotABurst(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	errandtest.StartDaemon(t, url, daemonEnv)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	daily := newUser(t, pool, ws, "daily@example.com", "daily", "Europe/Berlin", 8, 1)
	weekly := newUser(t, pool, ws, "weekly@example.com", "weekly", "America/New_York", 9, 1) // Mondays 09:00
	tick(t, url, pool, time.Date(2030, 1, 6, 12, 0, 0, 0, time.UTC))                         // a Sunday
	exec(t, pool, `DELETE FROM errand.river_job`)
	for d := range 4 {
		notify(t, pool, ws, daily, fmt.Sprintf("day %d", d))
		notify(t, pool, ws, weekly, fmt.Sprintf("day %d", d))
	}
	// Every replica down from Sunday until Thursday 10:00 UTC.
	thursday := time.Date(2030, 1, 10, 10, 0, 0, 0, time.UTC)
	tick(t, url, pool, thursday)
	es := digestEmails(t, pool)
	if len(es) != 1 || es[0].To != "daily@example.com" || es[0].Subject != "4 new in ACME (2030-01-10)" {
		t.Fatalf("after downtime: %+v, want one digest of the daily user's 2030-01-10 with 4 notifications", es)
	}
	// The weekly user's Monday passed three days ago, beyond 24 h: no digest
	// now, the next Monday's has all of it.
	w := scheduleOf(t, pool, weekly)
	if want := time.Date(2030, 1, 14, 14, 0, 0, 0, time.UTC); !w.NextDue.Equal(want) {
		t.Errorf("weekly next digest %s, want %s", w.NextDue, want)
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.notifications WHERE user_id = $1 AND digested_at IS NULL`, weekly); n != 4 {
		t.Errorf("%d of the weekly user's notifications waiting, want 4", n)
	}
	tick(t, url, pool, time.Date(2030, 1, 14, 14, 0, 0, 0, time.UTC))
	es = digestEmails(t, pool)
	if len(es) != 2 || es[1].To != "weekly@example.com" || es[1].Subject != "4 new in ACME (2030-W03)" {
		t.Errorf("next Monday: %+v", es)
	}
}

// A digest with nothing new sends nothing, and the job completes.
func TestNothingNewSendsNoEmail(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	errandtest.StartDaemon(t, url, daemonEnv)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	user := newUser(t, pool, ws, "ann@example.com", "daily", "UTC", 8, 1)
	tick(t, url, pool, time.Date(2030, 1, 9, 12, 0, 0, 0, time.UTC))
	notify(t, pool, ws, user, "one")
	tick(t, url, pool, time.Date(2030, 1, 10, 8, 0, 0, 0, time.UTC))
	tick(t, url, pool, time.Date(2030, 1, 11, 8, 0, 0, 0, time.UTC))
	if n := count(t, pool, `SELECT count(*) FROM errand.jobs WHERE kind = 'digest.send' AND status = 'completed'`); n != 3 {
		t.Errorf("%d digest jobs completed, want 3", n)
	}
	if es := digestEmails(t, pool); len(es) != 1 || es[0].Subject != "1 new in ACME (2030-01-10)" {
		t.Errorf("emails %+v, want only the 10th's", es)
	}
}

// A user in two workspaces gets each workspace's digest with that
// workspace's notifications only; a deleted workspace's schedules neither
// stop the tick nor get digests.
func TestDigestsStayInTheirWorkspace(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	errandtest.StartDaemon(t, url, daemonEnv)
	acme := errandtest.NewWorkspace(t, pool, "acme")
	globex := errandtest.NewWorkspace(t, pool, "globex")
	gone := errandtest.NewWorkspace(t, pool, "gone")
	ann := newUser(t, pool, acme, "ann@example.com", "daily", "UTC", 8, 1)
	exec(t, pool, `INSERT INTO errand.workspace_members (workspace_id, user_id) VALUES ($1, $2), ($3, $2)`, globex, ann, gone)
	exec(t, pool, `INSERT INTO errand.notification_preferences (workspace_id, user_id, hour) VALUES ($1, $2, 8), ($3, $2, 8)`, globex, ann, gone)
	tick(t, url, pool, time.Date(2030, 1, 9, 12, 0, 0, 0, time.UTC))
	notify(t, pool, acme, ann, "acme one")
	notify(t, pool, globex, ann, "globex one")
	notify(t, pool, globex, ann, "globex two")
	notify(t, pool, gone, ann, "gone one")
	exec(t, pool, `DELETE FROM errand.workspaces WHERE id = $1`, gone)
	tick(t, url, pool, time.Date(2030, 1, 10, 8, 0, 0, 0, time.UTC))
	es := digestEmails(t, pool)
	got := map[string]string{}
	for _, e := range es {
		got[e.Subject] = e.Text
	}
	if len(es) != 2 || !strings.Contains(got["1 new in ACME (2030-01-10)"], "acme one") || !strings.Contains(got["2 new in GLOBEX (2030-01-10)"], "globex two") ||
		strings.Contains(got["2 new in GLOBEX (2030-01-10)"], "acme") {
		t.Errorf("digests %+v", es)
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.digest_schedule WHERE workspace_id = $1`, gone); n != 0 {
		t.Errorf("%d schedules of the deleted workspace left", n)
	}
}

// The app upserting a preference with the same values keeps its next
// digest (no skipped day); changing the hour moves it; off stops digests.
func TestUpsertingAPreferenceKeepsItsNextDigest(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	user := newUser(t, pool, ws, "ann@example.com", "daily", "Europe/Berlin", 8, 1)
	due := time.Date(2030, 1, 10, 7, 0, 0, 0, time.UTC)
	exec(t, pool, `UPDATE errand.digest_schedule SET next_due_at = $1 WHERE user_id = $2`, due, user)
	upsert := `INSERT INTO errand.notification_preferences (workspace_id, user_id, frequency, timezone, hour) VALUES ($1, $2, $3, 'Europe/Berlin', $4)
		ON CONFLICT (workspace_id, user_id) DO UPDATE SET frequency = EXCLUDED.frequency, timezone = EXCLUDED.timezone, hour = EXCLUDED.hour`
	exec(t, pool, upsert, ws, user, "daily", 8)
	exec(t, pool, `INSERT INTO errand.notification_preferences (workspace_id, user_id, hour) VALUES ($1, $2, 9) ON CONFLICT DO NOTHING`, ws, user)
	exec(t, pool, `UPDATE errand.notification_preferences SET hour = 8 WHERE user_id = $1`, user)
	if s := scheduleOf(t, pool, user); !s.NextDue.Equal(due) {
		t.Errorf("next digest %s after an unchanged upsert, want %s", s.NextDue, due)
	}
	exec(t, pool, upsert, ws, user, "daily", 9)
	if s := scheduleOf(t, pool, user); s.NextDue.Equal(due) || s.NextDue.In(mustZone(t, "Europe/Berlin")).Hour() != 9 {
		t.Errorf("next digest %s after moving to 09:00", local(s.NextDue, mustZone(t, "Europe/Berlin")))
	}
	exec(t, pool, upsert, ws, user, "off", 9)
	if n := count(t, pool, `SELECT count(*) FROM errand.digest_schedule`); n != 0 {
		t.Errorf("%d schedules after off", n)
	}
	exec(t, pool, upsert, ws, user, "weekly", 9)
	exec(t, pool, `DELETE FROM errand.notification_preferences WHERE user_id = $1`, user)
	if n := count(t, pool, `SELECT count(*) FROM errand.digest_schedule`); n != 0 {
		t.Errorf("%d schedules after delete", n)
	}
}

// A change made after a digest's local time has passed but before the tick
// that sends it keeps that period when the new settings make it due too
// (migration 046): weekday on a daily digest, another name of the same
// zone, an hour already past today. Before, each of them moved the next
// digest to tomorrow and the day's was never sent.
func TestAChangeAfterADigestFellDueKeepsItsPeriod(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	user := newUser(t, pool, ws, "ann@example.com", "daily", "UTC", 0, 1)
	// Due at the last midnight UTC, on the database's clock, not sent yet;
	// the day before's was.
	exec(t, pool, `UPDATE errand.digest_schedule SET next_due_at = errand.digest_latest_due('daily', 'UTC', 0, 1, now()),
		last_due_at = errand.digest_latest_due('daily', 'UTC', 0, 1, now()) - interval '1 day' WHERE user_id = $1`, user)
	var period string
	if err := pool.QueryRow(context.Background(), `SELECT errand.digest_period('daily', 'UTC', next_due_at) FROM errand.digest_schedule WHERE user_id = $1`, user).Scan(&period); err != nil {
		t.Fatal(err)
	}
	for _, change := range []struct{ what, set string }{
		{"the weekday of a daily digest", "weekday = 3"},
		{"another name of the same zone", "timezone = 'Etc/UTC'"},
		{"an hour already past today", "hour = extract(hour FROM now() AT TIME ZONE 'UTC')::int"},
		{"the hour moved back to the start of the day", "hour = 0"},
	} {
		exec(t, pool, `UPDATE errand.notification_preferences SET `+change.set+` WHERE user_id = $1`, user)
		var got string
		var due bool
		if err := pool.QueryRow(context.Background(), `SELECT errand.digest_period('daily', zone, next_due_at), next_due_at <= now()
			FROM errand.digest_schedule WHERE user_id = $1`, user).Scan(&got, &due); err != nil {
			t.Fatal(err)
		}
		if got != period || !due {
			t.Errorf("after changing %s: next digest for %s (due now: %v), want %s's, due now", change.what, got, due, period)
		}
	}
}

// A second digest job for a period the user already had (the first job's
// row pruned after a day, the user's weekday moved later in the same week)
// emails the notifications it takes. With the email keyed by user and
// period alone, the contract gave back the first digest's email (here
// discarded, kept for days, as after a Resend outage), so the second
// marked its notifications digested and nothing was sent.
func TestASecondDigestInAPeriodSendsWhatItTakes(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	errandtest.StartDaemon(t, url, daemonEnv)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	user := newUser(t, pool, ws, "ann@example.com", "weekly", "UTC", 8, 1)
	tick(t, url, pool, time.Date(2030, 1, 6, 12, 0, 0, 0, time.UTC))
	notify(t, pool, ws, user, "monday item")
	tick(t, url, pool, time.Date(2030, 1, 7, 8, 0, 0, 0, time.UTC))
	if es := digestEmails(t, pool); len(es) != 1 {
		t.Fatalf("emails after Monday's digest %+v, want 1", es)
	}
	exec(t, pool, `DELETE FROM errand.river_job WHERE kind = 'digest.send'`)
	exec(t, pool, `UPDATE errand.river_job SET state = 'discarded', finalized_at = now() WHERE kind = 'email.send'`)
	notify(t, pool, ws, user, "tuesday item")
	exec(t, pool, `UPDATE errand.notification_preferences SET weekday = 5 WHERE user_id = $1`, user)
	if out, err := tickAt(url, time.Date(2030, 1, 11, 8, 0, 0, 0, time.UTC)); err != nil {
		t.Fatalf("tick: %v\n%s", err, out)
	}
	deadline := time.Now().Add(90 * time.Second)
	for count(t, pool, `SELECT count(*) FROM errand.jobs WHERE status IN ('pending', 'processing')`) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("jobs still pending after 90s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.jobs WHERE kind = 'digest.send' AND args ->> 'period' = '2030-W02' AND status = 'completed'`); n != 1 {
		t.Fatalf("%d digest jobs for 2030-W02 completed on Friday, want 1", n)
	}
	es := digestEmails(t, pool)
	if len(es) != 2 || !strings.Contains(es[1].Text, "tuesday item") || strings.Contains(es[1].Text, "monday item") {
		t.Errorf("emails %+v, want a second one with the tuesday item only", es)
	}
}
