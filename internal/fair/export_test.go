package fair

import "time"

// WakeAfterOf is the delay of the fallback wake-up the pilot last chose
// for queue (0: none, nothing held back).
func (d *Driver) WakeAfterOf(queue string) time.Duration {
	d.pilot.mu.Lock()
	defer d.pilot.mu.Unlock()
	return d.pilot.wakeAfter[queue]
}
