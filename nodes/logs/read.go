package logs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"berth.dev/berth/nodes/api"
)

// ReadOption adjusts Read.
type ReadOption func(*readConfig)

type readConfig struct {
	stopped func() bool
	poll    time.Duration
}

// Until ends a follow once stopped reports true (the container has exited)
// and everything written until then has been read. Without it a follow
// ends only with ctx.
func Until(stopped func() bool) ReadOption {
	return func(c *readConfig) { c.stopped = stopped }
}

// PollInterval sets how often a follow looks at the file when no change
// notification came (default 1 s; notifications make it a backstop).
func PollInterval(d time.Duration) ReadOption {
	return func(c *readConfig) { c.poll = d }
}

// maxJoined bounds how much of one line of output is assembled from its
// Partial chunks before it is written out as it is.
const maxJoined = 1 << 20

// Read writes the container output logged at path (and its rotated files,
// oldest first) to w, as kubectl logs shows it: the content of each line,
// chunks of a long line joined, stdout and stderr interleaved as written.
//
// opts.Since drops lines written before it; opts.TailLines > 0 keeps only
// the last so many of the remaining lines (0 is all); opts.Timestamps
// prefixes each line with its time (RFC 3339, nanoseconds). With
// opts.Follow, Read then keeps writing new lines, across rotations, until
// ctx is done or the Until condition holds. opts.Container and
// opts.Previous choose the path, which is the caller's business.
//
// A log with no file at all is an error wrapping os.ErrNotExist, unless
// following (the file may not be created yet).
func Read(ctx context.Context, path string, opts api.LogOptions, w io.Writer, options ...ReadOption) error {
	cfg := readConfig{poll: time.Second}
	for _, o := range options {
		o(&cfg)
	}
	r := &reader{opts: opts, w: w, pending: map[Stream]*pendingLine{}}
	if opts.TailLines > 0 {
		r.tail = make([]line, 0, min(opts.TailLines, 4096))
	}

	var watcher *fsnotify.Watcher
	if opts.Follow {
		// Watch before reading, so that nothing written in between is
		// missed; a failure to watch leaves polling.
		if fw, err := fsnotify.NewWatcher(); err == nil {
			if err := fw.Add(filepath.Dir(path)); err == nil {
				watcher = fw
				defer fw.Close()
			} else {
				fw.Close()
			}
		}
	}

	files, err := Files(path)
	if err != nil {
		return err
	}
	if len(files) == 0 && !opts.Follow {
		return fmt.Errorf("read log %s: %w", path, os.ErrNotExist)
	}
	// Rotated files are complete; the current one is read up to its end
	// and, when following, kept open.
	var cur *os.File
	for _, name := range files {
		f, err := r.open(name)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // rotated away while listing
			}
			return err
		}
		if err := r.readAll(f); err != nil {
			f.Close()
			return err
		}
		if name == path && opts.Follow {
			cur = f
		} else {
			f.Close()
		}
	}
	if err := r.flushTail(); err != nil {
		return err
	}
	if !opts.Follow {
		return r.flushPending()
	}
	defer func() {
		if cur != nil {
			cur.Close()
		}
	}()

	var events <-chan fsnotify.Event
	var watchErrs <-chan error
	if watcher != nil {
		events, watchErrs = watcher.Events, watcher.Errors
	}
	ticker := time.NewTicker(cfg.poll)
	defer ticker.Stop()
	for {
		// Whether the container has stopped is asked before reading, so
		// that what it wrote before stopping is read below.
		stopped := cfg.stopped != nil && cfg.stopped()
		if cur != nil {
			if err := r.readAll(cur); err != nil {
				return err
			}
		}
		next, err := r.catchUp(path, cur)
		if err != nil {
			return err
		}
		if next != cur {
			if cur != nil {
				cur.Close()
			}
			cur = next
			continue // read the new file before waiting
		}
		if stopped {
			return r.flushPending()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-events:
		case <-watchErrs:
		case <-ticker.C:
		}
	}
}

// catchUp handles rotation: when the file at path is no longer cur, it
// reads the rest of cur and every file written after the last one read,
// and returns the current file, opened. It returns cur when nothing
// rotated.
func (r *reader) catchUp(path string, cur *os.File) (*os.File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return cur, nil // between the rename and the new file
		}
		return nil, fmt.Errorf("read log: %w", err)
	}
	if cur != nil {
		if os.SameFile(fi, r.last) {
			return cur, nil
		}
		// Rotated: finish the old file, whose writer has moved on.
		if err := r.readAll(cur); err != nil {
			return nil, err
		}
	}
	files, err := Files(path)
	if err != nil {
		return nil, err
	}
	// The files after the last one read; all of them when that one is
	// gone (dropped as the oldest) or there was none.
	start := 0
	if r.last != nil {
		for i, name := range files {
			if st, err := os.Stat(name); err == nil && os.SameFile(st, r.last) {
				start = i + 1
			}
		}
	}
	for _, name := range files[start:] {
		f, err := r.open(name)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, err
		}
		if name == path {
			return f, nil // read by the caller, kept open
		}
		err = r.readAll(f)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	return cur, nil
}

// open opens one file of the log and makes it the last one read.
func (r *reader) open(name string) (*os.File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("read log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read log: %w", err)
	}
	r.last = fi
	// An incomplete line left at the end of the previous file (its writer
	// died mid-write) does not continue into this one.
	r.rest = r.rest[:0]
	return f, nil
}

type line struct {
	time    time.Time
	content []byte
}

type pendingLine struct {
	time    time.Time
	content []byte
}

type reader struct {
	opts api.LogOptions
	w    io.Writer
	// tail holds the last TailLines lines (a ring from head) until the
	// files that existed are read; nil once flushed or without a tail.
	tail []line
	head int
	// pending are lines whose Partial chunks arrived but not their end,
	// per stream.
	pending map[Stream]*pendingLine
	// rest is an incomplete last line of the current file (its writer
	// is mid-write).
	rest []byte
	// last is the file read last (the current one while following).
	last os.FileInfo
	buf  []byte
}

// readAll reads f from its offset to its end.
func (r *reader) readAll(f *os.File) error {
	br := bufio.NewReaderSize(f, 64<<10)
	for {
		b, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || (err != nil && len(b) > 0) {
			// A line longer than the buffer, or an incomplete last line.
			r.rest = append(r.rest, b...)
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				return r.readErr(err)
			}
			continue
		}
		if err != nil {
			return r.readErr(err)
		}
		if len(r.rest) > 0 {
			b = append(r.rest, b...)
			r.rest = r.rest[:0]
		}
		if err := r.entry(b); err != nil {
			return err
		}
	}
}

func (r *reader) readErr(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return fmt.Errorf("read log: %w", err)
}

// entry handles one complete CRI line; malformed lines are skipped, as
// the kubelet does.
func (r *reader) entry(b []byte) error {
	e, err := ParseEntry(b)
	if err != nil {
		return nil
	}
	p := r.pending[e.Stream]
	if e.Tag == Partial {
		if p == nil {
			p = &pendingLine{time: e.Time}
			r.pending[e.Stream] = p
		}
		p.content = append(p.content, e.Content...)
		if len(p.content) < maxJoined {
			return nil
		}
		// Too long to join: out with it as it is, without a newline.
		delete(r.pending, e.Stream)
		return r.line(line{time: p.time, content: p.content}, false)
	}
	if p != nil {
		delete(r.pending, e.Stream)
		return r.line(line{time: p.time, content: append(p.content, e.Content...)}, true)
	}
	return r.line(line{time: e.Time, content: bytes.Clone(e.Content)}, true)
}

// line writes one line of output, or keeps it for the tail.
func (r *reader) line(l line, newline bool) error {
	if !r.opts.Since.IsZero() && l.time.Before(r.opts.Since) {
		return nil
	}
	if newline {
		l.content = append(l.content, '\n')
	}
	if r.tail != nil {
		if len(r.tail) < r.opts.TailLines {
			r.tail = append(r.tail, l)
		} else {
			r.tail[r.head] = l
			r.head = (r.head + 1) % len(r.tail)
		}
		return nil
	}
	return r.write(l)
}

func (r *reader) write(l line) error {
	r.buf = r.buf[:0]
	if r.opts.Timestamps {
		r.buf = l.time.AppendFormat(r.buf, TimeFormat)
		r.buf = append(r.buf, ' ')
	}
	r.buf = append(r.buf, l.content...)
	if _, err := r.w.Write(r.buf); err != nil {
		return fmt.Errorf("write log: %w", err)
	}
	return nil
}

// flushTail writes the kept tail and ends tailing.
func (r *reader) flushTail() error {
	t := r.tail
	r.tail = nil
	for i := range t {
		if err := r.write(t[(r.head+i)%len(t)]); err != nil {
			return err
		}
	}
	return nil
}

// flushPending writes lines whose end never came (the container stopped
// mid-line).
func (r *reader) flushPending() error {
	for _, s := range []Stream{Stdout, Stderr} {
		if p := r.pending[s]; p != nil {
			delete(r.pending, s)
			if err := r.line(line{time: p.time, content: p.content}, true); err != nil {
				return err
			}
		}
	}
	return nil
}
