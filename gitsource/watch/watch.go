// Package watch notices new commits on the branch berth serve follows: on a
// local repository through fsnotify on its reference directories (with a
// poll as backstop), on a remote one by polling a caller-supplied resolver,
// and on either at once when a forge's webhook (see Webhook) nudges it.
//
// Every signal only means "look again": the watcher then reads the branch
// itself and reports it when its commit changed. It never trusts a
// payload's commit, and it knows nothing of transports: fetching a remote
// is the resolver's business.
package watch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Sources of an Event.
const (
	SourceFSNotify = "fsnotify"
	SourcePoll     = "poll"
	SourceWebhook  = "webhook"
)

// Event says the watched branch now points at Commit ("" when the branch
// was deleted). Source is what made the watcher look.
type Event struct {
	Branch string
	Commit string
	Source string
}

// Resolve returns the commit the branch points to now, "" when it does not
// exist. For a remote repository it fetches first.
type Resolve func(ctx context.Context) (string, error)

// Defaults of Options.
const (
	DefaultDebounce     = 100 * time.Millisecond
	DefaultPollInterval = 10 * time.Second
)

// Options say what to watch.
type Options struct {
	// Branch to watch (short name, "main").
	Branch string
	// Dir is a local repository (bare, or a worktree's top directory)
	// whose references are watched with fsnotify and read from disk.
	// Empty for a remote repository.
	Dir string
	// Resolve reads the branch. Required without Dir; with Dir it
	// replaces reading the reference from disk (fsnotify still says when).
	Resolve Resolve
	// Since is the commit the caller already has; Run reports the branch
	// at start when it differs ("" reports any existing commit).
	Since string
	// Interval between polls: the backstop for lost fsnotify events on a
	// local repository, the only signal besides webhooks on a remote one.
	// 0 is DefaultPollInterval.
	Interval time.Duration
	// Debounce gathers the burst of file events of pushes (lock file,
	// rename, packed-refs) into few looks: the first ref renamed into place
	// is looked at at once, the rest of the burst once it has been quiet
	// for Debounce. 0 is DefaultDebounce.
	Debounce time.Duration
	// DisableFSNotify polls a local repository only.
	DisableFSNotify bool
	// Logger receives warnings (a failed look, fsnotify unavailable);
	// nil discards them.
	Logger *slog.Logger
}

// Validate checks the options without touching the disk.
func (o Options) Validate() error {
	if _, err := branchRef(o.Branch); err != nil {
		return fmt.Errorf("watch options: %w", err)
	}
	if o.Dir == "" && o.Resolve == nil {
		return errors.New("watch options: a remote repository needs a Resolve function")
	}
	if o.Interval < 0 || o.Debounce < 0 {
		return errors.New("watch options: negative interval or debounce")
	}
	return nil
}

// Watcher reports changes of one branch on its Events channel.
type Watcher struct {
	opts    Options
	ref     string // refs/heads/<branch>
	dir     string // git directory, "" for a remote repository
	log     *slog.Logger
	resolve Resolve

	events chan Event
	nudge  chan struct{}
	once   sync.Once
	ready  chan struct{} // closed once Run watches and has looked once
}

// New checks opts and makes a Watcher; Run starts it.
func New(opts Options) (*Watcher, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	ref, _ := branchRef(opts.Branch)
	if opts.Interval == 0 {
		opts.Interval = DefaultPollInterval
	}
	if opts.Debounce == 0 {
		opts.Debounce = DefaultDebounce
	}
	w := &Watcher{
		opts:   opts,
		ref:    ref,
		log:    opts.Logger,
		events: make(chan Event, 1),
		nudge:  make(chan struct{}, 1),
		ready:  make(chan struct{}),
	}
	if w.log == nil {
		w.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	w.log = w.log.With("component", "watch", "branch", opts.Branch)
	if opts.Dir != "" {
		dir, err := gitDir(opts.Dir)
		if err != nil {
			return nil, fmt.Errorf("watch: %w", err)
		}
		w.dir = dir
	}
	w.resolve = opts.Resolve
	if w.resolve == nil {
		w.resolve = func(context.Context) (string, error) { return readRef(w.dir, w.ref) }
	}
	return w, nil
}

// Events delivers the branch's changes. It holds at most one event: when
// the consumer is busy, a newer event replaces the one waiting, so only the
// latest commit is ever delivered. It is never closed.
func (w *Watcher) Events() <-chan Event { return w.events }

// Nudge asks the watcher to look now (a webhook arrived). It never blocks;
// nudges arriving before the look starts are one look.
func (w *Watcher) Nudge() {
	select {
	case w.nudge <- struct{}{}:
	default:
	}
}

// Run watches until ctx ends, and then returns nil. It returns an error
// only when it cannot start; fsnotify failing to start (out of inotify
// watches, say) is logged and the watcher polls instead. Run may be called
// once.
func (w *Watcher) Run(ctx context.Context) error {
	started := false
	w.once.Do(func() { started = true })
	if !started {
		return errors.New("watch: Run called twice")
	}
	var fsw *refsWatcher
	if w.dir != "" && !w.opts.DisableFSNotify {
		var err error
		fsw, err = newRefsWatcher(w.dir)
		if err != nil {
			w.log.Warn("fsnotify unavailable, polling only", "interval", w.opts.Interval, "err", err)
			fsw = nil
		} else {
			defer fsw.close()
		}
	}
	last := w.opts.Since
	failing := false // a remote down logs once, not on every poll
	look := func(source string) {
		h, err := w.resolve(ctx)
		if err != nil {
			switch {
			case ctx.Err() != nil:
			case !failing:
				w.log.Warn("look at branch failed; retrying at each poll", "source", source, "err", err)
			default:
				w.log.Debug("look at branch failed again", "source", source, "err", err)
			}
			failing = true
			return
		}
		if failing {
			w.log.Info("look at branch works again", "source", source)
			failing = false
		}
		if h == last {
			return
		}
		last = h
		w.send(Event{Branch: w.opts.Branch, Commit: h, Source: source})
	}
	// Report what is there now when it differs from what the caller has.
	look(SourcePoll)
	close(w.ready)

	poll := time.NewTicker(w.opts.Interval)
	defer poll.Stop()
	var fsEvents <-chan fsnotify.Event
	var fsErrors <-chan error
	if fsw != nil {
		fsEvents, fsErrors = fsw.w.Events, fsw.w.Errors
	}
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	pending := false
	arm := func() {
		if !pending {
			pending = true
			debounce.Reset(w.opts.Debounce)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fsEvents:
			if !ok {
				fsEvents = nil
				continue
			}
			if fsw.relevant(ev) {
				if !pending && fsw.settled(ev) {
					// The first ref renamed into place in a while: a
					// push has landed; look at once rather than after
					// the debounce (the rest of a burst still waits
					// for it).
					look(SourceFSNotify)
				}
				arm()
			}
		case err, ok := <-fsErrors:
			if !ok {
				fsErrors = nil
				continue
			}
			// An overflow lost events: look again, as for any event.
			w.log.Warn("fsnotify error", "err", err)
			arm()
		case <-debounce.C:
			pending = false
			look(SourceFSNotify)
		case <-poll.C:
			look(SourcePoll)
		case <-w.nudge:
			look(SourceWebhook)
		}
	}
}

// send delivers ev, replacing an event the consumer has not taken yet.
// Run is the only sender, so after draining there is room.
func (w *Watcher) send(ev Event) {
	select {
	case w.events <- ev:
		return
	default:
	}
	select {
	case <-w.events:
	default:
	}
	w.events <- ev
}

// refsWatcher watches the directories whose entries change when a branch
// moves: the git directory (packed-refs is replaced there by a rename),
// refs/ and every directory under refs/heads/ (a branch "a/b" lives in
// refs/heads/a/). Watches are added for new directories as they appear,
// since inotify does not watch sub-directories.
type refsWatcher struct {
	w     *fsnotify.Watcher
	root  string
	refs  string
	heads string
}

func newRefsWatcher(dir string) (*refsWatcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	rw := &refsWatcher{w: fw, root: filepath.Clean(dir), refs: filepath.Join(dir, "refs"), heads: filepath.Join(dir, "refs", "heads")}
	if err := fw.Add(rw.root); err != nil {
		fw.Close()
		return nil, fmt.Errorf("watch %s: %w", rw.root, err)
	}
	if err := fw.Add(rw.refs); err != nil && !errors.Is(err, fs.ErrNotExist) {
		fw.Close()
		return nil, fmt.Errorf("watch %s: %w", rw.refs, err)
	}
	if err := rw.addTree(rw.heads); err != nil {
		fw.Close()
		return nil, err
	}
	return rw, nil
}

func (rw *refsWatcher) close() { rw.w.Close() }

// settled reports whether ev is the last step of a ref update: git writes
// a ref (or packed-refs) to NAME.lock and renames it into place, which
// inotify reports as the creation of NAME. The new value is readable then,
// and the objects it names were written before it.
func (rw *refsWatcher) settled(ev fsnotify.Event) bool {
	name := filepath.Clean(ev.Name)
	if !ev.Has(fsnotify.Create) || strings.HasSuffix(name, ".lock") {
		return false
	}
	if name == filepath.Join(rw.root, "packed-refs") {
		return true
	}
	if !strings.HasPrefix(name, rw.heads+string(filepath.Separator)) {
		return false
	}
	fi, err := os.Lstat(name)
	return err == nil && fi.Mode().IsRegular()
}

// addTree watches dir and every directory below it. Directories that
// vanish meanwhile (a branch deleted) are skipped.
func (rw *refsWatcher) addTree(dir string) error {
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if err := rw.w.Add(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("watch %s: %w", p, err)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// relevant reports whether ev may have moved a branch, adding watches for
// new directories on the way.
func (rw *refsWatcher) relevant(ev fsnotify.Event) bool {
	name := filepath.Clean(ev.Name)
	switch dir := filepath.Dir(name); {
	case dir == rw.root:
		// Only packed-refs and the refs directory matter at the top.
		base := filepath.Base(name)
		if base == "refs" && ev.Has(fsnotify.Create) {
			// Best effort: the poll is the backstop.
			_ = rw.w.Add(rw.refs)
			_ = rw.addTree(rw.heads)
			return true
		}
		return base == "packed-refs"
	case dir == rw.refs:
		if filepath.Base(name) == "heads" && ev.Has(fsnotify.Create) {
			_ = rw.addTree(rw.heads)
		}
		return filepath.Base(name) == "heads"
	case name == rw.heads || strings.HasPrefix(name, rw.heads+string(filepath.Separator)):
		if ev.Has(fsnotify.Create) {
			if fi, err := os.Lstat(name); err == nil && fi.IsDir() {
				_ = rw.addTree(name)
			}
		}
		return true
	}
	return false
}
