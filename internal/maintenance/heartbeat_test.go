package maintenance

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/internal/netfault"
	"github.com/errand-dev/errand/store"
)

// run starts hb.Run on ctx; the channel is closed when Run returns.
func run(ctx context.Context, hb *Heartbeat) <-chan struct{} {
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		hb.Run(ctx)
	}()
	return stopped
}

func waitClosed(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(waitBound):
		t.Fatalf("%s: not within %s", what, waitBound)
	}
}

func (r renewal) String() string {
	if !r.done {
		return fmt.Sprintf("renewal sent at %s", r.sent.Format(time.StampMilli))
	}
	return fmt.Sprintf("renewal sent at %s ended: error %v", r.sent.Format(time.StampMilli), r.err)
}

// stamp is replica id's heartbeat_at, as the database prints it.
func (f fixture) stamp(t *testing.T, id string) string {
	t.Helper()
	var s string
	if err := f.pool.QueryRow(context.Background(), `SELECT heartbeat_at::text FROM errand.replicas WHERE id = $1`, id).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestHeartbeatFencesWhenItCannotRenew(t *testing.T) {
	f := setup(t)
	u, err := url.Parse(f.url)
	if err != nil {
		t.Fatal(err)
	}
	proxy := netfault.New(t, u.Host)
	cfg, err := pgx.ParseConfig(proxy.URL(t, f.url))
	if err != nil {
		t.Fatal(err)
	}
	// Interval over half of FenceAfter, so a blocked renewal's own timeout
	// (Interval) is due after the fence deadline: only a fence that does
	// not wait for the renewal passes.
	const interval, fenceAfter = 2 * time.Second, 3 * time.Second
	clock := NewManualClock(time.Now())
	hb := NewHeartbeat(HeartbeatConfig{ID: "r1", ConnConfig: cfg, Interval: interval, FenceAfter: fenceAfter, Lease: 6 * time.Second, Clock: clock})
	hb.renewals = newTestSignal[renewal]()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := hb.Register(ctx, conn); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	t0 := clock.Now()
	registered := f.stamp(t, "r1")
	stopped := run(ctx, hb)

	// A renewal lands, stamped by the database, and counts from when it
	// was sent.
	clock.Advance(interval)
	renewedAt := t0.Add(interval)
	if ev := next(t, hb.renewals, "renewal"); ev.done || !ev.sent.Equal(renewedAt) {
		t.Fatalf("first event %v, want the renewal sent Interval after registering", ev)
	}
	if ev := next(t, hb.renewals, "renewal's end"); !ev.done || ev.err != nil {
		t.Fatalf("renewal: %v, want confirmed", ev)
	}
	renewed := f.stamp(t, "r1")
	var later bool
	if err := f.pool.QueryRow(ctx, `SELECT $1::timestamptz > $2::timestamptz`, renewed, registered).Scan(&later); err != nil || !later {
		t.Errorf("heartbeat_at %s after renewing, %s after registering (%v): want it moved on by the database", renewed, registered, err)
	}
	if hb.isFenced() || !hb.Healthy() {
		t.Errorf("fenced %v, healthy %v while renewing; want not fenced, healthy", hb.isFenced(), hb.Healthy())
	}

	// A partition: sockets stay open but nothing gets through, so the next
	// renewal hangs instead of failing fast.
	proxy.Blackhole(true)
	clock.Advance(interval)
	if ev := next(t, hb.renewals, "renewal into the partition"); ev.done || !ev.sent.Equal(t0.Add(2*interval)) {
		t.Fatalf("event %v, want a renewal sent at the next interval", ev)
	}
	deadline := renewedAt.Add(fenceAfter)
	clock.Advance(deadline.Sub(clock.Now()) - time.Millisecond)
	if hb.isFenced() {
		t.Fatal("fenced before fence_after had passed since the last confirmed renewal")
	}
	clock.Advance(time.Millisecond)
	if !hb.isFenced() {
		t.Fatal("not fenced fence_after past the last confirmed renewal, while a renewal was blocked in I/O")
	}
	if hb.Healthy() {
		t.Error("healthy after fencing")
	}
	// Fencing ends the blocked renewal and Run, without retiring: the jobs
	// wait out the lease.
	if ev := next(t, hb.renewals, "blocked renewal's end"); !ev.done || ev.err == nil {
		t.Errorf("blocked renewal ended %v, want an error", ev)
	}
	waitClosed(t, stopped, "Run returning after the fence")
	if got := f.stamp(t, "r1"); got != renewed {
		t.Errorf("heartbeat_at %s after fencing, want %s: a fenced replica does not retire", got, renewed)
	}
}

// A renewal slower than Interval but within FenceAfter - Interval (a commit
// waiting on a synchronous standby, a checkpoint) is confirmed, counts from
// when it was sent, and does not fence. The stall is the server's: a trigger
// makes the n-th renewal wait for advisory lock (4242, n), which the test
// holds.
func TestHeartbeatConfirmsASlowRenewal(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	_, err := f.pool.Exec(ctx, `
		CREATE SEQUENCE public.renewals;
		CREATE FUNCTION public.stall_renewal() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM pg_advisory_xact_lock(4242, nextval('public.renewals')::int);
			RETURN NEW;
		END $$;
		CREATE TRIGGER stall_renewal BEFORE UPDATE ON errand.replicas
			FOR EACH ROW EXECUTE FUNCTION public.stall_renewal();`)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(f.url)
	if err != nil {
		t.Fatal(err)
	}
	const interval, fenceAfter = HeartbeatIntervalDefault, HeartbeatFenceAfterDefault
	clock := NewManualClock(time.Now())
	hb := NewHeartbeat(HeartbeatConfig{ID: "slow", ConnConfig: cfg, Clock: clock})
	hb.renewals = newTestSignal[renewal]()
	if err := hb.Register(ctx, f.pool); err != nil {
		t.Fatal(err)
	}
	t0 := clock.Now()
	runCtx, cancel := context.WithCancel(ctx)
	stopped := run(runCtx, hb)
	defer func() {
		cancel()
		waitClosed(t, stopped, "Run returning")
	}()
	gate, err := pgx.Connect(ctx, f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer gate.Close(ctx) // before Run is stopped: a renewal may wait on it
	if _, err := gate.Exec(ctx, `SELECT pg_advisory_lock(4242, 1), pg_advisory_lock(4242, 2)`); err != nil {
		t.Fatal(err)
	}

	clock.Advance(interval)
	sent := t0.Add(interval)
	if ev := next(t, hb.renewals, "renewal"); ev.done || !ev.sent.Equal(sent) {
		t.Fatalf("first event %v, want the renewal sent Interval after registering", ev)
	}
	// In flight for three Intervals, up to a millisecond before the fence
	// deadline the registration set.
	clock.Advance(fenceAfter - interval - time.Millisecond)
	eventually(t, "the renewal waiting at the server", func() bool {
		var waiting int
		err := f.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'`).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		return waiting == 1
	})
	if hb.isFenced() {
		t.Fatal("fenced before fence_after")
	}
	if _, err := gate.Exec(ctx, `SELECT pg_advisory_unlock(4242, 1)`); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, hb.renewals, "slow renewal's end"); !ev.done || !ev.sent.Equal(sent) || ev.err != nil {
		t.Fatalf("after the stall: %v; want the renewal sent at %s confirmed", ev, sent.Format(time.StampMilli))
	}
	if got := hb.last(); !got.Equal(sent) {
		t.Errorf("the renewal counts from %s, want %s, when it was sent", got, sent)
	}
	// One renewal in flight at a time: the next is sent only now, and
	// stalls in turn.
	if ev := next(t, hb.renewals, "next renewal"); ev.done || !ev.sent.Equal(clock.Now()) {
		t.Fatalf("event %v, want the next renewal sent once the slow one ended, at %s", ev, clock.Now())
	}

	clock.Advance(time.Millisecond) // fence_after since registering
	if hb.isFenced() {
		t.Fatal("fenced although a renewal sent since was confirmed")
	}
	// The deadline is now fence_after past the slow renewal's sending.
	clock.Advance(sent.Add(fenceAfter).Sub(clock.Now()))
	if !hb.isFenced() {
		t.Error("not fenced fence_after past the last confirmed renewal's sending")
	}
}

// A renewal never revives an expired lease: the replica fences instead.
func TestHeartbeatFencesWhenItsLeaseHadExpired(t *testing.T) {
	f := setup(t)
	cfg, err := pgx.ParseConfig(f.url)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	hb := NewHeartbeat(HeartbeatConfig{ID: "late", ConnConfig: cfg, Lease: 6 * time.Second, Clock: NewManualClock(time.Now())})
	if err := hb.Register(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, `UPDATE errand.replicas SET heartbeat_at = now() - interval '1 minute' WHERE id = 'late'`); err != nil {
		t.Fatal(err)
	}
	if err := hb.Beat(ctx, conn); !errors.Is(err, store.ErrLeaseExpired) {
		t.Fatalf("renewing an expired lease: %v, want ErrLeaseExpired", err)
	}
	if !hb.isFenced() {
		t.Error("not fenced after finding its lease expired")
	}
	var age time.Duration
	if err := f.pool.QueryRow(ctx, `SELECT now() - heartbeat_at FROM errand.replicas WHERE id = 'late'`).Scan(&age); err != nil {
		t.Fatal(err)
	}
	if age < 50*time.Second {
		t.Errorf("the expired lease was renewed (age %s)", age)
	}
}
