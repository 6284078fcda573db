// Package logs owns containers' log files on a machine: the log driver that
// containerd's shim starts for every container (the hidden `berth
// __log-driver` mode, which copies the container's stdout and stderr into a
// size-capped, rotated file in the CRI log format), and the reader that
// serves `berth logs` from those files (tail, since, timestamps, follow
// across rotations).
//
// The driver runs as a child of the shim, not of the agent, so container
// output keeps being written while the agent restarts or is upgraded.
package logs

import (
	"bytes"
	"errors"
	"fmt"
	"time"
)

// TimeFormat is the timestamp format of CRI log lines (RFC 3339 with
// nanoseconds, as the kubelet writes and parses them).
const TimeFormat = time.RFC3339Nano

// Stream is the stream a log line came from.
type Stream string

// Streams.
const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// Tag says whether a log line ends a line of the container's output (Full)
// or is a chunk of a longer one (Partial).
type Tag string

// Tags.
const (
	Full    Tag = "F"
	Partial Tag = "P"
)

// MaxLineSize is the longest chunk of output one log line holds; longer
// lines are split into Partial lines (the kubelet's limit, 16 KiB).
const MaxLineSize = 16 * 1024

// Entry is one line of a CRI log file: "<time> <stream> <tag> <content>".
type Entry struct {
	Time    time.Time
	Stream  Stream
	Tag     Tag
	Content []byte // without the line's newline
}

// AppendEntry appends e as one CRI log line, newline included, to b.
func AppendEntry(b []byte, e Entry) []byte {
	b = e.Time.AppendFormat(b, TimeFormat)
	b = append(b, ' ')
	b = append(b, e.Stream...)
	b = append(b, ' ')
	b = append(b, e.Tag...)
	b = append(b, ' ')
	b = append(b, e.Content...)
	return append(b, '\n')
}

// ErrMalformed reports a line that is not in the CRI log format.
var ErrMalformed = errors.New("malformed CRI log line")

// ParseEntry parses one CRI log line, with or without its newline. The
// content aliases line. Tags may carry more than one field separated by
// ':' ("P:x"); only the first one counts.
func ParseEntry(line []byte) (Entry, error) {
	line = bytes.TrimSuffix(line, []byte{'\n'})
	var e Entry
	ts, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok {
		return e, fmt.Errorf("%w: no stream", ErrMalformed)
	}
	t, err := time.Parse(TimeFormat, string(ts))
	if err != nil {
		return e, fmt.Errorf("%w: time: %v", ErrMalformed, err)
	}
	stream, rest, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		return e, fmt.Errorf("%w: no tag", ErrMalformed)
	}
	switch s := Stream(stream); s {
	case Stdout, Stderr:
		e.Stream = s
	default:
		return e, fmt.Errorf("%w: stream %q", ErrMalformed, stream)
	}
	tags, content, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		// "<time> <stream> F" with nothing after the tag: an empty line
		// written by a writer that trims the trailing space.
		tags, content = rest, nil
	}
	tag, _, _ := bytes.Cut(tags, []byte{':'})
	switch tg := Tag(tag); tg {
	case Full, Partial:
		e.Tag = tg
	default:
		return e, fmt.Errorf("%w: tag %q", ErrMalformed, tags)
	}
	e.Time = t
	e.Content = content
	return e, nil
}
