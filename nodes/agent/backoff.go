package agent

import "time"

// Restart and image pull backoff, as the kubelet's flowcontrol.Backoff
// drives them: 10 s doubling to 300 s; an entry idle for twice the maximum
// (10 minutes) starts again from the initial delay.
const (
	backoffInitial = 10 * time.Second
	backoffMax     = 300 * time.Second
)

type backoffEntry struct {
	delay      time.Duration
	lastUpdate time.Time
}

// backoff holds one delay per key (a pod's container, a pod's image). It is
// not safe for concurrent use; each pod worker owns its own.
type backoff struct {
	initial, max time.Duration
	entries      map[string]*backoffEntry
}

func newBackoff() *backoff {
	return &backoff{initial: backoffInitial, max: backoffMax, entries: map[string]*backoffEntry{}}
}

// expired: eventTime (a container's exit, a pull attempt) comes more than
// twice the maximum after the entry's last update, so the entry no longer
// counts: the container ran for 10 minutes, or the image has not failed
// for that long.
func (b *backoff) expired(e *backoffEntry, eventTime time.Time) bool {
	return eventTime.Sub(e.lastUpdate) > 2*b.max
}

// Next records that the thing behind key is tried again now after an event
// at eventTime: the delay becomes the initial one for a new or expired
// entry, else double the last, up to the maximum.
func (b *backoff) Next(key string, eventTime, now time.Time) {
	e, ok := b.entries[key]
	if !ok || b.expired(e, eventTime) {
		b.entries[key] = &backoffEntry{delay: b.initial, lastUpdate: now}
		return
	}
	e.delay = min(2*e.delay, b.max)
	e.lastUpdate = now
}

// Get is the current delay of key (0 when none).
func (b *backoff) Get(key string) time.Duration {
	if e, ok := b.entries[key]; ok {
		return e.delay
	}
	return 0
}

// InBackOffSince reports whether, at now, an event at eventTime is still
// within key's delay, and when that delay ends.
func (b *backoff) InBackOffSince(key string, eventTime, now time.Time) (bool, time.Time) {
	e, ok := b.entries[key]
	if !ok || b.expired(e, eventTime) {
		return false, time.Time{}
	}
	until := eventTime.Add(e.delay)
	return now.Before(until), until
}

// InBackOffSinceUpdate reports whether now is within key's delay from its
// last update (image pulls: the last attempt).
func (b *backoff) InBackOffSinceUpdate(key string, now time.Time) (bool, time.Time) {
	e, ok := b.entries[key]
	if !ok || b.expired(e, now) {
		return false, time.Time{}
	}
	until := e.lastUpdate.Add(e.delay)
	return now.Before(until), until
}

// Reset forgets key.
func (b *backoff) Reset(key string) { delete(b.entries, key) }
