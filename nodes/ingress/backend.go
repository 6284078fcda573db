package ingress

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"berth.dev/berth/nodes/api"
)

// endpoint is one address of a backend. The proxy keeps one per address
// across routing tables, so that requests in flight and a recent failure
// are known to the table that replaces the one a request started with.
type endpoint struct {
	addr     netip.AddrPort
	hostport string
	inflight atomic.Int64
	// failedUntil (unix nanoseconds): an endpoint that could not be
	// connected to is chosen only when no other is left until then.
	failedUntil atomic.Int64
}

func (e *endpoint) usable(now int64) bool { return e.failedUntil.Load() <= now }

// backend is a Service port with its ready endpoints, as one table sees it.
type backend struct {
	service string
	eps     []*endpoint
	proxy   http.Handler // a ReverseProxy whose Transport balances over eps
}

// pick chooses an endpoint not in tried: by the power of two choices on
// requests in flight among those that did not fail lately, else among
// those that did; nil when every endpoint was tried.
func (b *backend) pick(tried []*endpoint, now int64) *endpoint {
	n := len(b.eps)
	if n == 0 {
		return nil
	}
	if len(tried) == 0 {
		if n == 1 {
			return b.eps[0]
		}
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		x, y := b.eps[i], b.eps[j]
		if x.usable(now) && y.usable(now) {
			return lessLoaded(x, y)
		}
	}
	// Slow path (a retry, or a failed endpoint drawn): the least loaded
	// of the untried endpoints that did not fail lately, from a random
	// start so that ties spread; else the one whose failure is oldest.
	var best, fallback *endpoint
	start := rand.IntN(n)
	for k := range n {
		e := b.eps[(start+k)%n]
		if containsEndpoint(tried, e) {
			continue
		}
		if !e.usable(now) {
			if fallback == nil || e.failedUntil.Load() < fallback.failedUntil.Load() {
				fallback = e
			}
			continue
		}
		if best == nil || e.inflight.Load() < best.inflight.Load() {
			best = e
		}
	}
	if best != nil {
		return best
	}
	return fallback
}

func lessLoaded(x, y *endpoint) *endpoint {
	if y.inflight.Load() < x.inflight.Load() {
		return y
	}
	return x
}

func containsEndpoint(es []*endpoint, e *endpoint) bool {
	for _, x := range es {
		if x == e {
			return true
		}
	}
	return false
}

// endpointSet hands out the endpoint of each address, the same one to
// every table until the address leaves the Ingress.
type endpointSet struct {
	mu  sync.Mutex
	eps map[netip.AddrPort]*endpoint
}

// build makes the backends of one table; done retires the endpoints the
// table does not use.
func (s *endpointSet) build() (newBackend func(api.IngressBackend) *backend, done func()) {
	s.mu.Lock()
	used := map[netip.AddrPort]*endpoint{}
	newBackend = func(ib api.IngressBackend) *backend {
		b := &backend{service: ib.Service}
		for _, a := range ib.Endpoints {
			if !a.IsValid() || a.Port() == 0 {
				continue
			}
			a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
			e := used[a]
			if e == nil {
				e = s.eps[a]
				if e == nil {
					e = &endpoint{addr: a, hostport: a.String()}
				}
				used[a] = e
			}
			if !containsEndpoint(b.eps, e) {
				b.eps = append(b.eps, e)
			}
		}
		return b
	}
	done = func() {
		s.eps = used
		s.mu.Unlock()
	}
	return newBackend, done
}

// errNoEndpoint is what a backend's transport returns when it has no
// endpoint left to try.
var errNoEndpoint = errors.New("no ready endpoint")

// dialError marks an error of connecting to an endpoint: nothing of the
// request was sent, so any request may be sent to another endpoint.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// dialer connects to endpoints, marking its errors as dialErrors.
func dialer(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &dialError{err}
		}
		return c, nil
	}
}

// balancer is the RoundTripper of one backend: it sends a request to one
// of the backend's endpoints, and to another when that one could not be
// reached.
type balancer struct {
	b           *backend
	rt          http.RoundTripper
	maxAttempts int
	failTimeout time.Duration
	onRetry     func(b *backend, e *endpoint, err error)
}

func (l *balancer) RoundTrip(req *http.Request) (*http.Response, error) {
	var body *countingBody
	if req.Body != nil && req.Body != http.NoBody {
		body = &countingBody{rc: req.Body}
		req.Body = body
	}
	var triedBuf [4]*endpoint
	tried := triedBuf[:0]
	var lastErr error
	for attempt := 0; attempt < l.maxAttempts; attempt++ {
		now := time.Now().UnixNano()
		e := l.b.pick(tried, now)
		if e == nil {
			break
		}
		if attempt > 0 && l.onRetry != nil {
			l.onRetry(l.b, tried[len(tried)-1], lastErr)
		}
		out := req
		if attempt == 0 {
			req.URL.Host = e.hostport
		} else {
			// The transport may still hold the request of the failed
			// attempt: send a copy.
			out = new(http.Request)
			*out = *req
			u := *req.URL
			u.Host = e.hostport
			out.URL = &u
		}
		e.inflight.Add(1)
		res, err := l.rt.RoundTrip(out)
		if err == nil {
			res.Body = trackBody(res.Body, e)
			return res, nil
		}
		e.inflight.Add(-1)
		lastErr = err
		var de *dialError
		connectFailed := errors.As(err, &de)
		if connectFailed && req.Context().Err() == nil {
			// Not the client's leaving: the endpoint's failure.
			e.failedUntil.Store(now + int64(l.failTimeout))
		}
		if !retryable(req, body, connectFailed, err) {
			return nil, err
		}
		tried = append(tried, e)
	}
	if lastErr == nil {
		lastErr = errNoEndpoint
	}
	return nil, lastErr
}

// retryable says whether a request that failed with err may go to another
// endpoint: when the connection could not be made and no byte of its body
// was taken (nothing reached the endpoint), or when it is idempotent and
// has no body (sending it twice is harmless) and the connection broke
// before an answer; never when the client is gone or the endpoint was too
// slow to answer, nor for an Upgrade.
func retryable(req *http.Request, body *countingBody, connectFailed bool, err error) bool {
	if req.Context().Err() != nil {
		return false
	}
	if connectFailed {
		return body == nil || body.n.Load() == 0
	}
	if body != nil || req.ContentLength > 0 {
		// The transport may still be reading the body: it cannot be
		// sent again.
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return req.Header.Get("Upgrade") == ""
	}
	return false
}

// countingBody is a request body that remembers whether any of it was
// read, and leaves closing to the ReverseProxy (which owns it).
type countingBody struct {
	rc io.ReadCloser
	n  atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error { return nil }

// trackBody counts the request as in flight on e until its response body
// is closed (for an upgraded connection: until the connection is).
func trackBody(body io.ReadCloser, e *endpoint) io.ReadCloser {
	if rwc, ok := body.(io.ReadWriteCloser); ok {
		return &trackedRWC{ReadWriteCloser: rwc, tracked: tracked{e: e}}
	}
	return &trackedBody{ReadCloser: body, tracked: tracked{e: e}}
}

type tracked struct {
	e      *endpoint
	closed atomic.Bool
}

func (t *tracked) done() {
	if t.closed.CompareAndSwap(false, true) {
		t.e.inflight.Add(-1)
	}
}

type trackedBody struct {
	io.ReadCloser
	tracked
}

func (b *trackedBody) Close() error {
	b.done()
	return b.ReadCloser.Close()
}

type trackedRWC struct {
	io.ReadWriteCloser
	tracked
}

func (b *trackedRWC) Close() error {
	b.done()
	return b.ReadWriteCloser.Close()
}
