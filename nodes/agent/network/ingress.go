package network

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/ingress"
)

// Ingress applies a Network's Ingress: on an ingress machine (Network.
// Ingress set) it runs the HTTP(S) reverse proxy of package nodes/ingress on
// the machine's addresses (Network.NodeIPs), and stops it when the machine
// no longer serves Ingresses. It is an agent.NetworkApplier, run after the
// Applier of the machine's networking.
type Ingress struct {
	mu  sync.Mutex
	cur *ingressRunner
	log *slog.Logger
}

// NewIngress returns an Ingress that serves nothing yet.
func NewIngress(log *slog.Logger) *Ingress {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Ingress{log: log.With("component", "ingress")}
}

// Apply serves n.Ingress (nothing when nil) on n.NodeIPs.
func (i *Ingress) Apply(ctx context.Context, n api.Network) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	cur, err := ensureIngress(i.cur, n.NodeIPs, n.Ingress, i.log)
	i.cur = cur
	return err
}

// Close stops the proxy, letting requests in flight finish (within 10 s).
func (i *Ingress) Close() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.cur == nil {
		return nil
	}
	err := i.cur.stop()
	i.cur = nil
	return err
}

// ingressRunner is the ingress proxy serving on this machine and what it
// listens on.
type ingressRunner struct {
	proxy       *ingress.Proxy
	addrs       []netip.Addr
	http, https int32
	cancel      context.CancelFunc
	exited      chan struct{} // closed when Serve has returned, err set
	err         error
}

// ingressDrain bounds how long requests in flight get when the proxy stops
// or moves to other ports.
const ingressDrain = 10 * time.Second

// ensureIngress serves in (nil: serve nothing) on the machine's addresses:
// the listeners are bound here, so a port taken by something else is an
// error of this Apply; a change of ports or addresses restarts the proxy,
// any other change is swapped in with Update, requests in flight
// unharmed.
func ensureIngress(cur *ingressRunner, addrs []netip.Addr, in *api.Ingress, log *slog.Logger) (*ingressRunner, error) {
	if in == nil || len(addrs) == 0 {
		if cur != nil {
			return nil, cur.stop()
		}
		if in != nil {
			return nil, errors.New("ingress: the machine has no address to serve on")
		}
		return nil, nil
	}
	httpPort, httpsPort := in.HTTPPort, in.HTTPSPort
	if httpPort == 0 {
		httpPort = ingress.DefaultHTTPPort
	}
	if httpsPort == 0 {
		httpsPort = ingress.DefaultHTTPSPort
	}
	if cur != nil {
		select {
		case <-cur.exited:
			// A listener failed under it: start again.
			log.Warn("ingress proxy had stopped; starting it again", "err", cur.err)
			cur = nil
		default:
		}
	}
	if cur != nil && cur.http == httpPort && cur.https == httpsPort && slices.Equal(cur.addrs, addrs) {
		for _, w := range cur.proxy.Update(in) {
			log.Warn("ingress", "source", w.Source, "problem", w.Message)
		}
		return cur, nil
	}
	if cur != nil {
		if err := cur.stop(); err != nil {
			log.Warn("stop the ingress proxy", "err", err)
		}
	}
	var httpLns, httpsLns []net.Listener
	closeAll := func() {
		for _, l := range append(httpLns, httpsLns...) {
			l.Close()
		}
	}
	for _, a := range addrs {
		for _, p := range []struct {
			port int32
			lns  *[]net.Listener
		}{{httpPort, &httpLns}, {httpsPort, &httpsLns}} {
			l, err := net.Listen("tcp", net.JoinHostPort(a.String(), strconv.Itoa(int(p.port))))
			if err != nil {
				closeAll()
				return nil, fmt.Errorf("ingress: %w", err)
			}
			*p.lns = append(*p.lns, l)
		}
	}
	proxy, err := ingress.New(ingress.Options{Addrs: addrs, DrainTimeout: ingressDrain, Logger: log})
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("ingress: %w", err)
	}
	for _, w := range proxy.Update(in) {
		log.Warn("ingress", "source", w.Source, "problem", w.Message)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &ingressRunner{proxy: proxy, addrs: slices.Clone(addrs), http: httpPort, https: httpsPort, cancel: cancel, exited: make(chan struct{})}
	go func() {
		r.err = proxy.Serve(ctx, httpLns, httpsLns)
		close(r.exited)
	}()
	log.Info("ingress proxy serving", "addrs", addrs, "http", httpPort, "https", httpsPort, "rules", len(in.Rules))
	return r, nil
}

// stop drains the proxy and waits for it.
func (r *ingressRunner) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), ingressDrain)
	defer cancel()
	err := r.proxy.Shutdown(ctx)
	r.cancel()
	<-r.exited
	return cmp.Or(err, r.err)
}
