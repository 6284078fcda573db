package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// testLogWriter sends log lines to the test's log.
type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// startServer runs a Server on a random loopback port (the same one on
// UDP and TCP) until the test ends, and checks that Run then returns nil.
func startServer(t testing.TB, o Options) (*Server, string) {
	t.Helper()
	if o.Listen == nil {
		o.Listen = []string{"127.0.0.1:0"}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if o.Upstreams == nil && o.ResolvConf == "" {
		// Never the machine's resolvers: an empty resolv.conf.
		o.ResolvConf = filepath.Join(t.TempDir(), "resolv.conf")
		if err := os.WriteFile(o.ResolvConf, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	stop := runServer(t, s)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	return s, s.Addrs()[0]
}

// runServer binds s and runs it; stop cancels Run and says how it ended.
func runServer(t testing.TB, s *Server) (stop func() error) {
	t.Helper()
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return func() error {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("Run: %w", err)
			}
			return nil
		case <-time.After(10 * time.Second):
			return errors.New("Run did not return after its context was cancelled")
		}
	}
}

func query(t testing.TB, netw, addr, name string, qtype uint16, edns uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	c := &dns.Client{Net: netw, Timeout: 5 * time.Second, UDPSize: 65535}
	resp, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", netw, name, dns.TypeToString[qtype], err)
	}
	return resp
}

func TestServerAnswers(t *testing.T) {
	_, addr := startServer(t, Options{View: mustView(t, testInput())})
	for _, netw := range []string{"udp", "tcp"} {
		t.Run(netw, func(t *testing.T) {
			r := query(t, netw, addr, "web.default.svc.cluster.local.", dns.TypeA, 0)
			if r.Rcode != dns.RcodeSuccess || !r.Authoritative || !r.RecursionAvailable {
				t.Errorf("A web: rcode %s aa %v ra %v", dns.RcodeToString[r.Rcode], r.Authoritative, r.RecursionAvailable)
			}
			if got := rrTexts(r.Answer); !slices.Equal(got, []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.20"}) {
				t.Errorf("A web: %q", got)
			}
			if r.IsEdns0() != nil {
				t.Error("EDNS in the answer to a query without it")
			}

			r = query(t, netw, addr, "Pg.DB.svc.cluster.local.", dns.TypeA, 1232)
			if len(r.Answer) != 3 || r.IsEdns0() == nil {
				t.Errorf("headless A: %d answers, edns %v", len(r.Answer), r.IsEdns0())
			}
			if r.Question[0].Name != "Pg.DB.svc.cluster.local." {
				t.Errorf("question not echoed as asked: %s", r.Question[0].Name)
			}

			r = query(t, netw, addr, "pg-1.pg.db.svc.cluster.local.", dns.TypeA, 0)
			if got := rrTexts(r.Answer); !slices.Equal(got, []string{"pg-1.pg.db.svc.cluster.local. 5 IN A 10.244.2.11"}) {
				t.Errorf("StatefulSet pod: %q", got)
			}

			r = query(t, netw, addr, "_postgres._tcp.pg.db.svc.cluster.local.", dns.TypeSRV, 0)
			if len(r.Answer) != 3 || len(r.Extra) != 3 {
				t.Errorf("headless SRV: %d answers, %d extra", len(r.Answer), len(r.Extra))
			}
			for _, rr := range r.Answer {
				if srv := rr.(*dns.SRV); srv.Port != 5432 || !strings.HasSuffix(srv.Target, ".pg.db.svc.cluster.local.") {
					t.Errorf("headless SRV record %s", rr)
				}
			}

			r = query(t, netw, addr, "1.0.96.10.in-addr.arpa.", dns.TypePTR, 0)
			if got := rrTexts(r.Answer); !slices.Equal(got, []string{"1.0.96.10.in-addr.arpa. 5 IN PTR kubernetes.default.svc.cluster.local."}) {
				t.Errorf("PTR: %q", got)
			}

			r = query(t, netw, addr, "nosuch.default.svc.cluster.local.", dns.TypeA, 0)
			if r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA {
				t.Errorf("NXDOMAIN: rcode %s, authority %v", dns.RcodeToString[r.Rcode], r.Ns)
			}
			r = query(t, netw, addr, "empty.db.svc.cluster.local.", dns.TypeA, 0)
			if r.Rcode != dns.RcodeNameError {
				t.Errorf("headless without endpoints: %s", dns.RcodeToString[r.Rcode])
			}
			r = query(t, netw, addr, "pg.db.svc.cluster.local.", dns.TypeAAAA, 0)
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
				t.Errorf("NODATA: rcode %s answers %d authority %d", dns.RcodeToString[r.Rcode], len(r.Answer), len(r.Ns))
			}
		})
	}
}

func TestServerMalformed(t *testing.T) {
	_, addr := startServer(t, Options{View: mustView(t, testInput())})
	c := &dns.Client{Timeout: 5 * time.Second}

	m := new(dns.Msg)
	m.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
	m.Opcode = dns.OpcodeNotify
	r, _, err := c.Exchange(m, addr)
	if err != nil || r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("NOTIFY: %v %v", r, err)
	}

	m = new(dns.Msg)
	m.Id = dns.Id()
	r, _, err = c.Exchange(m, addr)
	if err != nil || r.Rcode != dns.RcodeFormatError {
		t.Errorf("no question: %v %v", r, err)
	}

	m = new(dns.Msg)
	m.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
	m.Question[0].Qclass = dns.ClassCHAOS
	r, _, err = c.Exchange(m, addr)
	if err != nil || r.Rcode != dns.RcodeRefused {
		t.Errorf("class CH in the cluster domain: %v %v", r, err)
	}
}

// bigHeadless is a View with a headless Service of n endpoints, whose A
// answer does not fit 512 bytes.
func bigHeadless(t testing.TB, n int) *View {
	var eps []Endpoint
	for i := range n {
		eps = append(eps, Endpoint{IP: netip.AddrFrom4([4]byte{10, 244, byte(i / 250), byte(1 + i%250)})})
	}
	return mustView(t, Input{Services: []Service{{Namespace: "ns", Name: "big", Headless: true, Endpoints: eps}}})
}

func TestServerTruncation(t *testing.T) {
	_, addr := startServer(t, Options{View: bigHeadless(t, 100)})
	const name = "big.ns.svc.cluster.local."

	r := query(t, "udp", addr, name, dns.TypeA, 0)
	if !r.Truncated || len(r.Answer) >= 100 {
		t.Fatalf("UDP without EDNS: truncated %v with %d answers", r.Truncated, len(r.Answer))
	}
	r = query(t, "tcp", addr, name, dns.TypeA, 0)
	if r.Truncated || len(r.Answer) != 100 {
		t.Fatalf("TCP: truncated %v with %d answers", r.Truncated, len(r.Answer))
	}
	// 100 A records compressed are about 1.6 kB: they fit a 4096 buffer.
	r = query(t, "udp", addr, name, dns.TypeA, 4096)
	if r.Truncated || len(r.Answer) != 100 {
		t.Fatalf("UDP with EDNS 4096: truncated %v with %d answers", r.Truncated, len(r.Answer))
	}

	// Answers turn round, so that clients taking the first spread.
	first := map[string]bool{}
	for range 5 {
		r = query(t, "tcp", addr, name, dns.TypeA, 0)
		first[r.Answer[0].(*dns.A).A.String()] = true
		got := rrTexts(r.Answer)
		if len(got) != 100 || len(slices.Compact(got)) != 100 {
			t.Fatalf("rotated answer lost or repeated records: %d", len(slices.Compact(got)))
		}
	}
	if len(first) < 2 {
		t.Errorf("the first address is always %v", first)
	}
}

// TestServerUpdate swaps Views while queries run (with -race this checks
// that lookups share nothing an update writes).
func TestServerUpdate(t *testing.T) {
	s, addr := startServer(t, Options{View: mustView(t, testInput()), Logger: slog.New(slog.DiscardHandler)})
	var wg sync.WaitGroup
	var failed atomic.Int32
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Timeout: 5 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				m := new(dns.Msg)
				m.SetQuestion("_postgres._tcp.pg.db.svc.cluster.local.", dns.TypeSRV)
				r, _, err := c.Exchange(m, addr)
				if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
					failed.Add(1)
				}
			}
		}()
	}
	for i := range 50 {
		in := testInput()
		in.Serial = uint32(i + 1)
		in.Services[0].ClusterIPs = []netip.Addr{netip.AddrFrom4([4]byte{10, 96, 1, byte(i)})}
		s.Update(mustView(t, in))
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d queries failed during updates", n)
	}
	r := query(t, "udp", addr, "kubernetes.default.svc.cluster.local.", dns.TypeA, 0)
	if got := rrTexts(r.Answer); !slices.Equal(got, []string{"kubernetes.default.svc.cluster.local. 5 IN A 10.96.1.49"}) {
		t.Errorf("after the updates: %q", got)
	}
	r = query(t, "udp", addr, "cluster.local.", dns.TypeSOA, 0)
	if soa := r.Answer[0].(*dns.SOA); soa.Serial != 50 {
		t.Errorf("serial %d, want 50", soa.Serial)
	}
}

// upstreamServer is a second miekg/dns server on loopback that stands for
// the machine's resolver.
type upstreamServer struct {
	addr     string
	udp, tcp atomic.Int32
}

func startUpstream(t testing.TB, handle func(w dns.ResponseWriter, r *dns.Msg)) *upstreamServer {
	t.Helper()
	pc, ln, err := listenPair("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveUpstream(t, pc, ln, handle)
}

// serveUpstream serves handle on sockets already bound.
func serveUpstream(t testing.TB, pc net.PacketConn, ln net.Listener, handle func(w dns.ResponseWriter, r *dns.Msg)) *upstreamServer {
	u := &upstreamServer{addr: ln.Addr().String()}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if _, ok := w.LocalAddr().(*net.TCPAddr); ok {
			u.tcp.Add(1)
		} else {
			u.udp.Add(1)
		}
		handle(w, r)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ActivateAndServe()
		}()
		<-started
		t.Cleanup(func() {
			srv.Shutdown()
			<-done
		})
	}
	return u
}

// resolver answers like a recursive resolver: example.test has an
// address, big.example.test has TXT records too large for a 4096-byte
// UDP answer, everything else is NXDOMAIN.
func resolver(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	q := r.Question[0]
	switch {
	case q.Name == "example.test." && q.Qtype == dns.TypeA:
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(192, 0, 2, 1)})
	case q.Name == "www.example.test." && q.Qtype == dns.TypeA:
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(192, 0, 2, 80)})
	case q.Name == "big.example.test." && q.Qtype == dns.TypeTXT:
		for i := range 30 {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300},
				Txt: []string{fmt.Sprintf("%03d%s", i, strings.Repeat("t", 200))}})
		}
	default:
		m.Rcode = dns.RcodeNameError
	}
	size := dns.MaxMsgSize
	if _, ok := w.LocalAddr().(*net.UDPAddr); ok {
		size = dns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
	}
	m.Truncate(size)
	w.WriteMsg(m)
}

// deadUpstream is an address that takes UDP packets and never answers.
func deadUpstream(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

func counter(t *testing.T, s *Server, name string, labels ...string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

func hasLabels(m *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == kv[i] && l.GetValue() == kv[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func TestServerForward(t *testing.T) {
	up := startUpstream(t, resolver)
	s, addr := startServer(t, Options{View: mustView(t, testInput()), Upstreams: []string{up.addr}})

	for _, netw := range []string{"udp", "tcp"} {
		r := query(t, netw, addr, "example.test.", dns.TypeA, 0)
		if got := rrTexts(r.Answer); !slices.Equal(got, []string{"example.test. 300 IN A 192.0.2.1"}) || r.Authoritative {
			t.Errorf("%s forward: %q aa %v", netw, got, r.Authoritative)
		}
	}
	if up.udp.Load() != 1 || up.tcp.Load() != 1 {
		t.Errorf("upstream saw %d UDP and %d TCP queries, want 1 and 1 (the client's transport)", up.udp.Load(), up.tcp.Load())
	}
	r := query(t, "udp", addr, "nosuch.example.test.", dns.TypeA, 0)
	if r.Rcode != dns.RcodeNameError {
		t.Errorf("upstream NXDOMAIN came back as %s", dns.RcodeToString[r.Rcode])
	}

	// Too big for UDP upstream: the forwarder retries over TCP, our answer
	// to the UDP client is truncated in turn, and the client's TCP retry
	// gets everything.
	up.udp.Store(0)
	up.tcp.Store(0)
	r = query(t, "udp", addr, "big.example.test.", dns.TypeTXT, 4096)
	if !r.Truncated {
		t.Errorf("UDP answer of %d records not truncated", len(r.Answer))
	}
	if up.udp.Load() != 1 || up.tcp.Load() != 1 {
		t.Errorf("upstream saw %d UDP and %d TCP queries for a truncated answer, want 1 and 1", up.udp.Load(), up.tcp.Load())
	}
	r = query(t, "tcp", addr, "big.example.test.", dns.TypeTXT, 0)
	if r.Truncated || len(r.Answer) != 30 {
		t.Errorf("TCP: truncated %v, %d records", r.Truncated, len(r.Answer))
	}

	// An ExternalName's target is resolved upstream.
	r = query(t, "udp", addr, "ext.default.svc.cluster.local.", dns.TypeA, 0)
	want := []string{"ext.default.svc.cluster.local. 5 IN CNAME www.example.com."}
	if got := rrTexts(r.Answer); !slices.Equal(got, want) || r.Rcode != dns.RcodeNameError {
		t.Errorf("ExternalName to a name upstream does not know: %s %q", dns.RcodeToString[r.Rcode], got)
	}
	in := testInput()
	in.Services = append(in.Services, Service{Namespace: "default", Name: "www", Type: "ExternalName", ExternalName: "www.example.test"})
	s.Update(mustView(t, in))
	r = query(t, "udp", addr, "www.default.svc.cluster.local.", dns.TypeA, 0)
	want = []string{"www.default.svc.cluster.local. 5 IN CNAME www.example.test.", "www.example.test. 300 IN A 192.0.2.80"}
	if got := rrTexts(r.Answer); !slices.Equal(got, want) || r.Rcode != dns.RcodeSuccess {
		t.Errorf("ExternalName chased: %s %q", dns.RcodeToString[r.Rcode], got)
	}

	if got := counter(t, s, "berth_dns_forwards_total", "rcode", "NOERROR"); got != 4 {
		t.Errorf("forwards NOERROR = %v, want 4", got)
	}
	if got := counter(t, s, "berth_dns_queries_total"); got != 7 {
		t.Errorf("queries = %v, want 7", got)
	}
	if got := counter(t, s, "berth_dns_answers_total"); got != 2 {
		t.Errorf("answers = %v, want 2", got)
	}
}

func TestServerFailover(t *testing.T) {
	up := startUpstream(t, resolver)
	dead := deadUpstream(t)
	s, addr := startServer(t, Options{
		Upstreams:       []string{dead, up.addr},
		AttemptTimeout:  300 * time.Millisecond,
		UpstreamBackoff: time.Hour,
	})
	for i := range 4 {
		r := query(t, "udp", addr, "example.test.", dns.TypeA, 0)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("query %d: %s, %d answers", i, dns.RcodeToString[r.Rcode], len(r.Answer))
		}
	}
	// The dead upstream was tried once (by the first query, which starts
	// with it), then kept last while the live one answers.
	if got := counter(t, s, "berth_dns_upstream_failures_total", "upstream", dead); got != 1 {
		t.Errorf("failures of the dead upstream = %v, want 1", got)
	}
	if got := up.udp.Load(); got != 4 {
		t.Errorf("live upstream answered %d queries, want 4", got)
	}
}

func TestServerRoundRobin(t *testing.T) {
	a, b := startUpstream(t, resolver), startUpstream(t, resolver)
	_, addr := startServer(t, Options{Upstreams: []string{a.addr, b.addr}})
	for range 10 {
		query(t, "udp", addr, "example.test.", dns.TypeA, 0)
	}
	if a.udp.Load() != 5 || b.udp.Load() != 5 {
		t.Errorf("queries per upstream %d and %d, want 5 and 5", a.udp.Load(), b.udp.Load())
	}
}

func TestServerAllUpstreamsFail(t *testing.T) {
	servfail := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		w.WriteMsg(m)
	})
	liar := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Question[0].Name = "other.test."
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "other.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(192, 0, 2, 66)})
		w.WriteMsg(m)
	})
	dead := deadUpstream(t)
	s, addr := startServer(t, Options{Upstreams: []string{servfail.addr, liar.addr, dead}, AttemptTimeout: 200 * time.Millisecond})
	r := query(t, "udp", addr, "example.test.", dns.TypeA, 0)
	if r.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if servfail.udp.Load() != 1 {
		t.Errorf("SERVFAIL upstream asked %d times", servfail.udp.Load())
	}
	if got := counter(t, s, "berth_dns_failures_total", "reason", "forward"); got != 1 {
		t.Errorf("forward failures = %v, want 1", got)
	}
	if liar.udp.Load() != 1 {
		t.Errorf("upstream answering another question asked %d times", liar.udp.Load())
	}
	if got := counter(t, s, "berth_dns_upstream_failures_total"); got != 3 {
		t.Errorf("upstream failures = %v, want 3", got)
	}

	// Without any upstream, the cluster still answers; the rest fails.
	_, addr = startServer(t, Options{View: mustView(t, testInput())})
	if r := query(t, "udp", addr, "example.test.", dns.TypeA, 0); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("no upstream: %s", dns.RcodeToString[r.Rcode])
	}
	if r := query(t, "udp", addr, "web.default.svc.cluster.local.", dns.TypeA, 0); len(r.Answer) != 1 {
		t.Errorf("no upstream, cluster name: %v", r)
	}
}

func TestServerShutdown(t *testing.T) {
	s, err := New(Options{Listen: []string{"127.0.0.1:0"}, Upstreams: []string{"192.0.2.1"}})
	if err != nil {
		t.Fatal(err)
	}
	stop := runServer(t, s)
	addr := s.Addrs()[0]
	query(t, "tcp", addr, "svc.cluster.local.", dns.TypeA, 0)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The sockets are closed: the same port can be bound again.
	s2, err := New(Options{Listen: []string{addr}, Upstreams: []string{"192.0.2.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Listen(); err != nil {
		t.Fatalf("port not released: %v", err)
	}
	s2.Close()
	if len(s2.Addrs()) != 0 {
		t.Errorf("addresses after Close: %v", s2.Addrs())
	}

	// A busy address is an error from Run.
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s3, err := New(Options{Listen: []string{busy.LocalAddr().String()}, Upstreams: []string{"192.0.2.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s3.Run(context.Background()); err == nil {
		t.Fatal("Run on a busy address returned nil")
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{
		{},
		{Listen: []string{"localhost:53"}},
		{Listen: []string{"127.0.0.1"}},
		{Listen: []string{"127.0.0.1:99999"}},
		{Listen: []string{"127.0.0.1:53"}, Upstreams: []string{"resolver.example"}},
		{Listen: []string{"127.0.0.1:53"}, AttemptTimeout: -1},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if _, err := New(Options{Listen: []string{"127.0.0.1:0"}, ResolvConf: filepath.Join(t.TempDir(), "missing")}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing resolv.conf: %v", err)
	}
}

func TestUpstreams(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	err := os.WriteFile(path, []byte(`nameserver 127.0.0.53
nameserver ::1
nameserver 198.18.0.1
nameserver 192.0.2.53
nameserver 0.0.0.0
nameserver 2001:db8::53
nameserver not-an-ip
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Upstreams(path, []netip.Addr{ip("198.18.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"192.0.2.53:53", "[2001:db8::53]:53"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}

	// The server leaves out its own listen address.
	s, err := New(Options{Listen: []string{"198.18.0.1:53"}, ResolvConf: path})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Upstreams(); !slices.Equal(got, want) {
		t.Errorf("server upstreams %q, want %q", got, want)
	}
	for in, want := range map[string]string{"192.0.2.1": "192.0.2.1:53", "192.0.2.1:5353": "192.0.2.1:5353", "2001:db8::1": "[2001:db8::1]:53", "[2001:db8::1]:54": "[2001:db8::1]:54"} {
		if got, err := upstreamAddr(in); err != nil || got != want {
			t.Errorf("upstreamAddr(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
}

func TestServerForwardLimit(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	slow := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		arrived <- struct{}{}
		<-release
		resolver(w, r)
	})
	s, addr := startServer(t, Options{Upstreams: []string{slow.addr}, MaxForwards: 1})
	first := make(chan *dns.Msg, 1)
	go func() {
		m := new(dns.Msg)
		m.SetQuestion("example.test.", dns.TypeA)
		r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, addr)
		if err != nil {
			t.Error(err)
		}
		first <- r
	}()
	<-arrived // the first query holds the only slot
	if r := query(t, "udp", addr, "www.example.test.", dns.TypeA, 0); r.Rcode != dns.RcodeRefused {
		t.Errorf("second forward while the first waits: %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	// The cluster's own names are not limited.
	if r := query(t, "udp", addr, "svc.cluster.local.", dns.TypeA, 0); r.Rcode != dns.RcodeSuccess {
		t.Errorf("cluster name while forwards are full: %s", dns.RcodeToString[r.Rcode])
	}
	close(release)
	if r := <-first; r == nil || len(r.Answer) != 1 {
		t.Errorf("first forward: %v", r)
	}
	if got := counter(t, s, "berth_dns_failures_total", "reason", "overload"); got != 1 {
		t.Errorf("overload failures = %v, want 1", got)
	}
}

func TestServerResolvConfChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	write := func(content string) {
		t.Helper()
		tmp := path + ".new"
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil { // as resolvconf and DHCP clients do
			t.Fatal(err)
		}
	}
	write("nameserver 192.0.2.53\n")
	s, _ := startServer(t, Options{ResolvConf: path, ResolvConfPoll: 10 * time.Millisecond})
	if got := s.Upstreams(); !slices.Equal(got, []string{"192.0.2.53:53"}) {
		t.Fatalf("upstreams %q", got)
	}
	waitUpstreams := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !slices.Equal(s.Upstreams(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("upstreams %q, want %q", s.Upstreams(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	write("nameserver 127.0.0.53\nnameserver 192.0.2.54\nnameserver 2001:db8::53\n")
	waitUpstreams("192.0.2.54:53", "[2001:db8::53]:53")

	// Without resolvers, names outside the cluster get SERVFAIL until
	// some come back.
	write("# no resolvers\n")
	waitUpstreams()
	write("nameserver 192.0.2.55\n")
	waitUpstreams("192.0.2.55:53")
}
