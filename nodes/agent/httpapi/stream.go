package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"berth.dev/berth/nodes/api"
)

// ErrorTrailer is the trailer that carries an api.Error (JSON) when a
// stream fails after its 200 was sent; a clean end has no such trailer.
const ErrorTrailer = "Berth-Error"

func (s *server) events(w http.ResponseWriter, r *http.Request) {
	q, err := newQuery(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	since := q.time("since")
	follow := q.bool("follow")
	if err := q.finish(); err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx, done := streamContext(r.Context())
	defer done()
	events, err := s.b.Events(ctx, since, follow)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc.Flush()
	enc := json.NewEncoder(w)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if err := enc.Encode(ev); err != nil {
				return // the client went away
			}
			// Flush each event unless another is already waiting.
			if len(events) == 0 {
				if err := rc.Flush(); err != nil {
					return
				}
			}
		}
	}
}

func (s *server) logs(w http.ResponseWriter, r *http.Request) {
	pod := r.PathValue("namespace") + "/" + r.PathValue("name")
	q, err := newQuery(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	opts := api.LogOptions{
		Container:  q.str("container"),
		Follow:     q.bool("follow"),
		Previous:   q.bool("previous"),
		Timestamps: q.bool("timestamps"),
	}
	opts.TailLines, _ = q.int("tailLines")
	sinceSeconds, hasSinceSeconds := q.int("sinceSeconds")
	opts.Since = q.time("sinceTime")
	if err := q.finish(); err != nil {
		s.writeError(w, r, err)
		return
	}
	if hasSinceSeconds {
		if !opts.Since.IsZero() {
			s.writeError(w, r, fmt.Errorf("%w: query parameters \"sinceSeconds\" and \"sinceTime\" exclude each other", api.ErrInvalid))
			return
		}
		if sinceSeconds == 0 {
			s.writeError(w, r, fmt.Errorf("%w: query parameter \"sinceSeconds\" must be positive", api.ErrInvalid))
			return
		}
		opts.Since = time.Now().Add(-time.Duration(sinceSeconds) * time.Second)
	}

	ctx, done := streamContext(r.Context())
	defer done()
	lw := &logWriter{w: w, rc: http.NewResponseController(w)}
	err = s.b.Logs(ctx, pod, opts, lw)
	switch {
	case err == nil:
		if !lw.started {
			lw.start()
		}
	case !lw.started:
		s.writeError(w, r, err)
	case ctx.Err() != nil:
		// The client went away or the agent is stopping: nobody to tell.
	default:
		kind, _ := api.KindOf(err)
		b, _ := json.Marshal(api.Error{Kind: kind, Message: err.Error()})
		w.Header().Set(ErrorTrailer, string(b))
		if info, ok := r.Context().Value(infoKey{}).(*requestInfo); ok {
			info.err = err.Error()
		}
	}
}

// logWriter sends the 200 with the first byte of log, so that an error
// before any output is still an ordinary error answer, and flushes every
// write: a followed log reaches the client line by line.
type logWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
}

func (l *logWriter) start() {
	l.started = true
	h := l.w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Trailer", ErrorTrailer)
	l.w.WriteHeader(http.StatusOK)
}

func (l *logWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if !l.started {
		l.start()
	}
	n, err := l.w.Write(p)
	if err != nil {
		return n, err
	}
	return n, l.rc.Flush()
}

// lifecycle is what Serve tells the handlers through the request context:
// drain ends when the server shuts down, so that endless streams (followed
// events and logs, exec sessions) end too; streams counts them so that
// Serve can wait for them to finish.
type lifecycle struct {
	drain   context.Context
	streams streamGroup
}

type lifecycleKey struct{}

// streamContext returns a context for a long-lived stream: it ends with
// the request or when the server drains. Call done when the stream ends.
func streamContext(ctx context.Context) (_ context.Context, done func()) {
	ctx, cancel := context.WithCancel(ctx)
	lc, ok := ctx.Value(lifecycleKey{}).(*lifecycle)
	if !ok {
		return ctx, cancel
	}
	if !lc.streams.add() {
		cancel() // already draining
		return ctx, cancel
	}
	stop := context.AfterFunc(lc.drain, cancel)
	return ctx, func() {
		stop()
		cancel()
		lc.streams.done()
	}
}

// streamGroup counts streams in progress; once closed it takes no more.
type streamGroup struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{}
}

func (g *streamGroup) add() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.n++
	return true
}

func (g *streamGroup) done() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.n == 0 && g.closed {
		close(g.idle)
	}
}

// close takes no more streams; the channel closes when the last one ends.
func (g *streamGroup) close() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.closed = true
		g.idle = make(chan struct{})
		if g.n == 0 {
			close(g.idle)
		}
	}
	return g.idle
}
