package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// DefaultResolvConf is where the machine's resolvers are read from.
const DefaultResolvConf = "/etc/resolv.conf"

// errNoUpstream is returned when there is no resolver to forward to.
var errNoUpstream = errors.New("no upstream resolver")

// forwarder sends the queries the View does not answer to the machine's
// resolvers: round robin over the healthy ones, failing over to the next
// on a timeout, a network error, SERVFAIL or REFUSED; over UDP with a TCP
// retry when the answer is truncated (or over TCP when the client asked
// over TCP).
type forwarder struct {
	upstreams atomic.Pointer[[]*upstream]
	next      atomic.Uint32
	attempt   time.Duration // one upstream's time to answer
	cooldown  time.Duration // how long a failed upstream is tried last
	now       func() time.Time
}

type upstream struct {
	addr      string
	downUntil atomic.Int64 // unix nanoseconds; tried last until then
}

func newForwarder(addrs []string, attempt, cooldown time.Duration) *forwarder {
	f := &forwarder{attempt: attempt, cooldown: cooldown, now: time.Now}
	f.set(addrs)
	return f
}

// set replaces the upstreams; queries under way finish with the old ones.
func (f *forwarder) set(addrs []string) {
	ups := make([]*upstream, 0, len(addrs))
	for _, a := range addrs {
		ups = append(ups, &upstream{addr: a})
	}
	f.upstreams.Store(&ups)
}

// addrs are the upstreams' addresses.
func (f *forwarder) addrs() []string {
	ups := *f.upstreams.Load()
	out := make([]string, len(ups))
	for i, u := range ups {
		out[i] = u.addr
	}
	return out
}

// attemptError is one upstream's failure.
type attemptError struct {
	upstream string
	err      error
}

func (e *attemptError) Error() string { return e.upstream + ": " + e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

// exchange forwards req and returns the first usable answer, with the
// upstream that gave it. failed is called for every upstream that failed
// on the way. The answer carries req's ID.
func (f *forwarder) exchange(ctx context.Context, req *dns.Msg, tcp bool, failed func(upstream string, err error)) (*dns.Msg, string, error) {
	ups := *f.upstreams.Load()
	n := len(ups)
	if n == 0 {
		return nil, "", errNoUpstream
	}
	// Round robin: each query starts one further along; the healthy ones
	// first, the ones that failed recently after them.
	start := int(f.next.Add(1) - 1)
	now := f.now().UnixNano()
	order := make([]*upstream, 0, n)
	for pass := 0; pass < 2; pass++ {
		for i := range n {
			u := ups[(start+i)%n]
			if (u.downUntil.Load() <= now) == (pass == 0) {
				order = append(order, u)
			}
		}
	}

	q := req.Copy()
	q.Id = dns.Id()
	var errs []error
	for _, u := range order {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		resp, err := f.try(ctx, q, u.addr, tcp)
		if err == nil {
			u.downUntil.Store(0)
			resp.Id = req.Id
			return resp, u.addr, nil
		}
		u.downUntil.Store(f.now().Add(f.cooldown).UnixNano())
		if failed != nil {
			failed(u.addr, err)
		}
		errs = append(errs, &attemptError{upstream: u.addr, err: err})
	}
	return nil, "", fmt.Errorf("forward %s: %w", req.Question[0].Name, errors.Join(errs...))
}

// errMismatch is an answer whose question is not the one asked.
var errMismatch = errors.New("answer to another question")

// errUpstreamRcode is an upstream that answered but could not resolve.
var errUpstreamRcode = errors.New("upstream answered")

func (f *forwarder) try(ctx context.Context, q *dns.Msg, addr string, tcp bool) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, f.attempt)
	defer cancel()
	netw := "udp"
	if tcp {
		netw = "tcp"
	}
	c := &dns.Client{Net: netw, Timeout: f.attempt}
	resp, _, err := c.ExchangeContext(ctx, q, addr)
	if err == nil && resp.Truncated && !tcp {
		c.Net = "tcp"
		resp, _, err = c.ExchangeContext(ctx, q, addr)
	}
	if err != nil {
		return nil, err
	}
	// The ID matched; an answer to another question is still not ours.
	if len(resp.Question) != 1 || resp.Question[0].Qtype != q.Question[0].Qtype ||
		!strings.EqualFold(resp.Question[0].Name, q.Question[0].Name) {
		return nil, errMismatch
	}
	if resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused {
		return nil, fmt.Errorf("%w %s", errUpstreamRcode, dns.RcodeToString[resp.Rcode])
	}
	return resp, nil
}

// Upstreams reads the nameservers of a resolv.conf as forwarding
// addresses (port 53), leaving out loopback and unspecified addresses
// (which would be a local stub, perhaps this very server) and the
// addresses in exclude (where the cluster DNS itself listens).
func Upstreams(path string, exclude []netip.Addr) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read upstream resolvers: %w", err)
	}
	defer f.Close()
	rc, err := ParseResolvConf(f)
	if err != nil {
		return nil, fmt.Errorf("read upstream resolvers from %s: %w", path, err)
	}
	var out []string
	for _, ns := range rc.Nameservers {
		ip, err := netip.ParseAddr(ns)
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		if ip.IsLoopback() || ip.IsUnspecified() || containsAddr(exclude, ip) {
			continue
		}
		out = append(out, net.JoinHostPort(ip.String(), "53"))
	}
	return out, nil
}

// upstreamAddr makes "ip", "ip:port" and "[ip6]:port" into ip:port.
func upstreamAddr(s string) (string, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return net.JoinHostPort(ip.String(), "53"), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return "", fmt.Errorf("upstream %q: not an address or address:port", s)
	}
	return net.JoinHostPort(ap.Addr().String(), strconv.Itoa(int(ap.Port()))), nil
}

func containsAddr(list []netip.Addr, ip netip.Addr) bool {
	for _, e := range list {
		if e.Unmap() == ip {
			return true
		}
	}
	return false
}
