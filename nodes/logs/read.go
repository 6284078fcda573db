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
	"slices"
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

	// Everything before the current file, then the current file itself,
	// kept open when following.
	cur, err := r.catchUp(path, nil)
	if err != nil {
		return err
	}
	if len(r.read) == 0 && !opts.Follow {
		return fmt.Errorf("read log %s: %w", path, os.ErrNotExist)
	}
	if cur != nil {
		if err := r.readAll(cur); err != nil {
			cur.Close()
			return err
		}
	}
	if err := r.flushTail(); err != nil {
		return err
	}
	if !opts.Follow {
		if cur != nil {
			cur.Close()
		}
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

// catchUp handles rotation. When the file at path is no longer cur (the
// writer rotated it), it reads the rest of cur, then every rotated file not
// read yet, oldest first, and returns the current file, opened, closing
// cur. It returns cur when nothing rotated, and nil when there is no
// current file yet.
//
// Rotated files keep their names (see File), so the numbered order is
// the order they were written in; files are told apart by identity
// (device and inode), so a rotation while catchUp reads neither skips nor
// repeats one. A file rotated away (dropped as the oldest) before it was
// read is lost.
func (r *reader) catchUp(path string, cur *os.File) (*os.File, error) {
	if cur != nil {
		fi, err := os.Stat(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read log: %w", err)
		}
		if err != nil || os.SameFile(fi, r.cur) {
			return cur, nil // not rotated, or between the rename and the new file
		}
		// Rotated: finish it, since its writer has moved on. It is older
		// than every file not read yet. (An incomplete line at its end,
		// from a writer that died mid-write, does not continue into the
		// next file: rest is reset for each.)
		err = r.readAll(cur)
		cur.Close()
		if err != nil {
			return nil, err
		}
	}
	for {
		names, err := Files(path)
		if err != nil {
			return nil, err
		}
		var present []os.FileInfo
		for _, name := range names {
			if name == path {
				continue
			}
			f, fi, err := openLog(name)
			if errors.Is(err, os.ErrNotExist) {
				continue // dropped meanwhile
			}
			if err != nil {
				return nil, err
			}
			present = append(present, fi)
			if r.wasRead(fi) {
				f.Close()
				continue
			}
			r.read = append(r.read, fi)
			r.rest = r.rest[:0]
			err = r.readAll(f)
			f.Close()
			if err != nil {
				return nil, err
			}
		}
		// Forget files that are gone, so that a reused inode is not
		// taken for one of them.
		r.read = slices.DeleteFunc(r.read, func(fi os.FileInfo) bool {
			return !slices.ContainsFunc(present, func(p os.FileInfo) bool { return os.SameFile(p, fi) })
		})

		f, fi, err := openLog(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		// It is the current file only if nothing rotated since the
		// listing; else look again (it may be among the rotated ones now).
		if rotatedSince(path, r.read, fi) {
			f.Close()
			continue
		}
		r.read = append(r.read, fi)
		r.cur = fi
		r.rest = r.rest[:0]
		return f, nil
	}
}

// rotatedSince reports whether the log has a rotated file that is neither
// read nor cur.
func rotatedSince(path string, read []os.FileInfo, cur os.FileInfo) bool {
	names, err := Files(path)
	if err != nil {
		return true
	}
	for _, name := range names {
		if name == path {
			continue
		}
		fi, err := os.Stat(name)
		if err != nil {
			continue
		}
		if os.SameFile(fi, cur) || !slices.ContainsFunc(read, func(r os.FileInfo) bool { return os.SameFile(r, fi) }) {
			return true
		}
	}
	return false
}

func (r *reader) wasRead(fi os.FileInfo) bool {
	return slices.ContainsFunc(r.read, func(x os.FileInfo) bool { return os.SameFile(x, fi) })
}

// openLog opens one file of a log.
func openLog(name string) (*os.File, os.FileInfo, error) {
	f, err := os.Open(name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("read log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("read log: %w", err)
	}
	return f, fi, nil
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
	// read are the files of the log read (or being read); cur is the
	// current one.
	read []os.FileInfo
	cur  os.FileInfo
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
