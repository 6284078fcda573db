package agent

import "time"

// Clock is the manager's source of time: backoff, probe periods, deadlines
// and resyncs all read it, so tests move time instead of sleeping.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f once d has passed. f must not block: the manager's
	// callbacks only say "look again".
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc.
type Timer interface {
	// Stop prevents the call if it has not happened yet, and reports
	// whether it did so.
	Stop() bool
}

// realClock is the wall clock.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
