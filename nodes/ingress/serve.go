package ingress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// run is one Serve or ListenAndServe in progress.
type run struct {
	stop    chan struct{} // closed by Shutdown: drain and return
	force   chan struct{} // closed by Shutdown when its ctx ends: stop draining
	done    chan struct{} // closed when Serve returned
	stopped sync.Once
	forced  sync.Once
}

// begin registers a Serve; only one runs at a time.
func (p *Proxy) begin() (*run, error) {
	p.runMu.Lock()
	defer p.runMu.Unlock()
	if p.run != nil {
		return nil, ErrServing
	}
	p.run = &run{stop: make(chan struct{}), force: make(chan struct{}), done: make(chan struct{})}
	return p.run, nil
}

func (p *Proxy) end(r *run) {
	p.runMu.Lock()
	p.run = nil
	p.runMu.Unlock()
	p.redirectPort.Store(0)
	p.transport.CloseIdleConnections()
	close(r.done)
}

// Shutdown stops the Serve or ListenAndServe in progress: its listeners
// close at once, requests in flight get until ctx ends (and at most
// Options.DrainTimeout) to finish, and Shutdown returns when Serve has
// returned. It returns ctx's error when the drain was cut short, and nil
// when nothing was serving.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.runMu.Lock()
	r := p.run
	p.runMu.Unlock()
	if r == nil {
		return nil
	}
	r.stopped.Do(func() { close(r.stop) })
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		r.forced.Do(func() { close(r.force) })
		<-r.done
		return ctx.Err()
	}
}

// Serve serves plain HTTP on httpLns and HTTPS on httpsLns until ctx ends
// or Shutdown is called, then drains (see Shutdown) and returns nil; it
// returns an error when a listener fails. The listeners are closed when it
// returns. Redirects to HTTPS name the port of the first HTTPS listener.
// The Ingress's ports are not followed: the caller chose the listeners.
func (p *Proxy) Serve(ctx context.Context, httpLns, httpsLns []net.Listener) error {
	r, err := p.begin()
	if err != nil {
		return err
	}
	defer p.end(r)
	if len(httpsLns) > 0 {
		if ta, ok := httpsLns[0].Addr().(*net.TCPAddr); ok {
			p.redirectPort.Store(int32(ta.Port))
		}
	}
	s := p.newServers()
	for _, ln := range httpLns {
		s.start(listenKey{tls: false, addr: ln.Addr().String()}, ln)
	}
	for _, ln := range httpsLns {
		s.start(listenKey{tls: true, addr: ln.Addr().String()}, ln)
	}
	var failed error
	select {
	case <-ctx.Done():
	case <-r.stop:
	case failed = <-s.failed:
	}
	s.drainAll(r)
	return failed
}

// ListenAndServe serves plain HTTP and HTTPS on every one of
// Options.Addrs, on the ports of the Ingress of the last Update (80 and
// 443 by default), until ctx ends or Shutdown is called; then it drains
// (see Shutdown) and returns nil. When an Update changes the ports, the
// listeners on the old ones stop taking connections and drain while the
// new ones start. It returns an error when no listener can be bound at
// the start, or when one fails while serving; an address that cannot be
// bound later is logged and retried.
func (p *Proxy) ListenAndServe(ctx context.Context) error {
	if len(p.opts.Addrs) == 0 {
		return errors.New("ingress proxy: no address to listen on")
	}
	r, err := p.begin()
	if err != nil {
		return err
	}
	defer p.end(r)
	s := p.newServers()
	first := true
	retry := time.NewTimer(rebindInterval)
	defer retry.Stop()
	for {
		t := p.table.Load()
		want := p.wantedListeners(t)
		for k := range s.servers {
			if !slices.Contains(want, k) {
				s.drainOne(k, r)
			}
		}
		var bindErrs []error
		for _, k := range want {
			if _, ok := s.servers[k]; ok {
				continue
			}
			ln, err := net.Listen("tcp", k.addr)
			if err != nil {
				bindErrs = append(bindErrs, err) // it names the address
				continue
			}
			s.start(k, ln)
		}
		if first && len(s.servers) == 0 {
			s.drainAll(r)
			return fmt.Errorf("ingress proxy: %w", errors.Join(bindErrs...))
		}
		first = false
		for _, err := range bindErrs {
			p.log.Error("ingress cannot listen; retrying", "err", err)
		}
		if !retry.Stop() {
			select {
			case <-retry.C:
			default:
			}
		}
		if len(bindErrs) > 0 {
			retry.Reset(rebindInterval)
		}
		select {
		case <-ctx.Done():
			s.drainAll(r)
			return nil
		case <-r.stop:
			s.drainAll(r)
			return nil
		case err := <-s.failed:
			s.drainAll(r)
			return err
		case <-p.portsChanged:
		case <-retry.C:
		}
	}
}

// wantedListeners are the listeners of table t on Options.Addrs.
func (p *Proxy) wantedListeners(t *table) []listenKey {
	var want []listenKey
	for _, a := range p.opts.Addrs {
		want = append(want, listenKey{tls: false, addr: netip.AddrPortFrom(a, uint16(t.httpPort)).String()})
		if t.httpsPort != t.httpPort {
			want = append(want, listenKey{tls: true, addr: netip.AddrPortFrom(a, uint16(t.httpsPort)).String()})
		}
	}
	return want
}

// listenKey names one listener.
type listenKey struct {
	tls  bool
	addr string
}

func (k listenKey) String() string {
	if k.tls {
		return "https " + k.addr
	}
	return "http " + k.addr
}

// servers are the http.Servers of one run.
type servers struct {
	p        *Proxy
	servers  map[listenKey]*server
	failed   chan error
	draining sync.WaitGroup
}

type server struct {
	srv *http.Server
	ln  net.Listener
	// stopping is set before the listener is closed, so that the error
	// of Serve then is not taken for a failure.
	stopping atomic.Bool
	// active counts the requests being handled, upgraded connections
	// included (http.Server.Shutdown does not wait for those).
	active sync.WaitGroup
	// base is the context of its requests: cancelled when a drain is cut
	// short, which ends requests to endpoints and upgraded connections.
	base       context.Context
	cancelBase context.CancelFunc
	done       chan struct{} // closed when Serve returned
}

func (p *Proxy) newServers() *servers {
	return &servers{p: p, servers: map[listenKey]*server{}, failed: make(chan error, 1)}
}

// start serves on ln.
func (s *servers) start(k listenKey, ln net.Listener) {
	p := s.p
	sv := &server{ln: ln, done: make(chan struct{})}
	sv.base, sv.cancelBase = context.WithCancel(context.Background())
	sv.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sv.active.Add(1)
			defer sv.active.Done()
			p.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: p.opts.ReadHeaderTimeout,
		IdleTimeout:       p.opts.IdleTimeout,
		ErrorLog:          p.errorLog,
		BaseContext:       func(net.Listener) context.Context { return sv.base },
	}
	if k.tls {
		sv.srv.TLSConfig = p.tlsConfig.Clone()
	}
	s.servers[k] = sv
	p.log.Info("ingress listening", "listen", k.String())
	go func() {
		defer close(sv.done)
		var err error
		if k.tls {
			err = sv.srv.ServeTLS(ln, "", "")
		} else {
			err = sv.srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !sv.stopping.Load() {
			select {
			case s.failed <- fmt.Errorf("ingress proxy: serve %s: %w", k, err):
			default:
			}
		}
	}()
}

// drainOne closes the listener of k at once (its address may be bound
// again right away) and lets its requests finish in the background.
func (s *servers) drainOne(k listenKey, r *run) {
	sv := s.servers[k]
	delete(s.servers, k)
	sv.stopping.Store(true)
	sv.ln.Close()
	s.p.log.Info("ingress stops listening", "listen", k.String())
	s.draining.Add(1)
	go func() {
		defer s.draining.Done()
		s.drain(sv, r)
	}()
}

// drainAll stops every listener and waits for their drains.
func (s *servers) drainAll(r *run) {
	for k := range s.servers {
		s.drainOne(k, r)
	}
	s.draining.Wait()
}

// drain closes a server's listener and idle connections, waits for the
// requests in flight (bounded by DrainTimeout and by Shutdown's context),
// then ends what is left.
func (s *servers) drain(sv *server, r *run) {
	ctx, cancel := context.WithTimeout(context.Background(), s.p.opts.DrainTimeout)
	defer cancel()
	go func() {
		select {
		case <-r.force:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := sv.srv.Shutdown(ctx)
	if err == nil {
		// No new request can start now: wait for those upgraded.
		idle := make(chan struct{})
		go func() {
			sv.active.Wait()
			close(idle)
		}()
		select {
		case <-idle:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err != nil {
		s.p.log.Warn("ingress drain cut short", "err", err)
	}
	sv.cancelBase()
	sv.srv.Close()
	<-sv.done
	sv.active.Wait()
}
