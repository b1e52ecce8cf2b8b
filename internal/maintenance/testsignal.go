package maintenance

// testSignal reports an event that only tests wait for, as River's
// testsignal package does: nil outside tests, where signal does nothing.
// It never blocks the service; tests read every event in order.
type testSignal[T any] chan T

func newTestSignal[T any]() testSignal[T] { return make(testSignal[T], 100) }

func (s testSignal[T]) signal(v T) {
	if s == nil {
		return
	}
	select {
	case s <- v:
	default:
	}
}
