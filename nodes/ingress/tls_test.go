package ingress

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/nodes/api"
)

// TestSNIChoosesCertificate makes real TLS handshakes with certificates
// issued in the test and checks which one each server name gets.
func TestSNIChoosesCertificate(t *testing.T) {
	ca := newTestCA(t)
	p := startProxy(t, Options{})
	b := newBackendServer(t, "b")
	in := ingressFor("", b.addr())
	in.TLS = []api.IngressTLS{
		// Listed out of order: "a/..." is the first by Source, so it
		// is the default for names no entry covers.
		ca.tlsEntry(t, "z/wild", "*.wild.example"),
		ca.tlsEntry(t, "a/exact", "exact.example"),
		ca.tlsEntry(t, "m/both", "shop.wild.example", "other.example"),
		{Source: "b/broken", Hosts: []string{"broken.example"}, Cert: []byte("not a certificate"), Key: []byte("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleQ==\n-----END PRIVATE KEY-----\n")},
	}
	warns := p.Update(in)
	if len(warns) != 1 || warns[0].Source != "b/broken" {
		t.Fatalf("warnings %v, want one about b/broken", warns)
	}
	tests := []struct{ serverName, wantCN string }{
		{"exact.example", "a/exact"},
		{"EXACT.example", "a/exact"},
		{"x.wild.example", "z/wild"},
		{"shop.wild.example", "m/both"}, // exact beats wildcard
		{"other.example", "m/both"},
		{"a.b.wild.example", "a/exact"}, // one label only: the default
		{"wild.example", "a/exact"},
		{"broken.example", "a/exact"}, // its entry did not parse
		{"", "a/exact"},               // no SNI
	}
	for _, tt := range tests {
		if cn := p.peerCert(t, tt.serverName).Subject.CommonName; cn != tt.wantCN {
			t.Errorf("SNI %q: got certificate %q, want %q", tt.serverName, cn, tt.wantCN)
		}
	}
	// A verifying client gets through to the backend over HTTPS, and
	// the backend is told the request came over HTTPS.
	res, err := p.httpsClient(ca, "x.wild.example").Get("https://x.wild.example/path")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Echo-X-Forwarded-Proto") != "https" {
		t.Errorf("HTTPS request: %d %q, X-Forwarded-Proto %q", res.StatusCode, body, res.Header.Get("Echo-X-Forwarded-Proto"))
	}
	if res.ProtoMajor != 2 {
		t.Errorf("HTTPS request used %s, want HTTP/2 offered by ALPN", res.Proto)
	}
}

func TestSelfSignedFallback(t *testing.T) {
	p := startProxy(t, Options{})
	b := newBackendServer(t, "b")
	p.Update(ingressFor("", b.addr()))
	cert := p.peerCert(t, "anything.example")
	if cert.Subject.CommonName != "berth ingress default certificate" {
		t.Errorf("without TLS entries the proxy serves %q", cert.Subject.CommonName)
	}
	res, err := p.httpsClient(nil, "anything.example").Get("https://anything.example/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("HTTPS with the fallback certificate: %d", res.StatusCode)
	}
}

func TestTLSMinimumVersion(t *testing.T) {
	p := startProxy(t, Options{})
	c, err := tls.Dial("tcp", p.httpsAddr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11, MinVersion: tls.VersionTLS10})
	if err == nil {
		c.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
	c, err = tls.Dial("tcp", p.httpsAddr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS 1.2: %v", err)
	}
	c.Close()
}

func TestSSLRedirect(t *testing.T) {
	ca := newTestCA(t)
	b := newBackendServer(t, "b")
	in := ingressFor("", b.addr())
	in.TLS = []api.IngressTLS{ca.tlsEntry(t, "ns/tls", "secure.example", "*.wild.example")}

	p := startProxy(t, Options{})
	p.Update(in)
	tests := []struct {
		host, path string
		wantCode   int
		wantLoc    string
	}{
		{"secure.example", "/a/b?x=1&y=%20", 308, fmt.Sprintf("https://secure.example:%d/a/b?x=1&y=%%20", p.httpsPort)},
		{"Secure.Example:8080", "/", 308, fmt.Sprintf("https://secure.example:%d/", p.httpsPort)},
		{"x.wild.example", "/", 308, fmt.Sprintf("https://x.wild.example:%d/", p.httpsPort)},
		{"plain.example", "/", 200, ""},
		{"secure.example", "/.well-known/acme-challenge/token", 200, ""},
	}
	for _, tt := range tests {
		res, _ := p.get(t, http.MethodPost, tt.host, tt.path, strings.NewReader("body"))
		if res.StatusCode != tt.wantCode || res.Header.Get("Location") != tt.wantLoc {
			t.Errorf("%s%s: %d %q, want %d %q", tt.host, tt.path, res.StatusCode, res.Header.Get("Location"), tt.wantCode, tt.wantLoc)
		}
	}

	off := startProxy(t, Options{NoSSLRedirect: true})
	off.Update(in)
	if res, _ := off.get(t, http.MethodGet, "secure.example", "/", nil); res.StatusCode != 200 {
		t.Errorf("with NoSSLRedirect: %d, want 200", res.StatusCode)
	}

	// On the Ingress's own port 443 the redirect names no port.
	h, err := New(Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	h.Update(in)
	rec := &recorder{header: http.Header{}}
	req, _ := http.NewRequest(http.MethodGet, "http://secure.example/x", nil)
	h.ServeHTTP(rec, req)
	if rec.code != 308 || rec.header.Get("Location") != "https://secure.example/x" {
		t.Errorf("redirect on the default port: %d %q", rec.code, rec.header.Get("Location"))
	}
}

// recorder is a minimal ResponseWriter for calling ServeHTTP directly.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(c int)   { r.code = c }
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = 200
	}
	return r.body.Write(b)
}

// TestCertificateProblemsNeverShowKeys checks that warnings and logs
// about bad TLS entries name the Source and never the key.
func TestCertificateProblemsNeverShowKeys(t *testing.T) {
	ca := newTestCA(t)
	goodCert, goodKey := ca.issue(t, "good", time.Time{}, "good.example")
	otherCert, otherKey := ca.issue(t, "other", time.Time{}, "other.example")
	expiredCert, expiredKey := ca.issue(t, "expired", time.Now().Add(-time.Hour), "old.example")
	secret := []byte("-----BEGIN PRIVATE KEY-----\nU0VDUkVULUtFWS1NQVRFUklBTA==\n-----END PRIVATE KEY-----\n")
	var logged bytes.Buffer
	p, err := New(Options{Logger: slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	warns := p.Update(&api.Ingress{TLS: []api.IngressTLS{
		{Source: "ns/good", Hosts: []string{"good.example"}, Cert: goodCert, Key: goodKey},
		{Source: "ns/garbage-key", Hosts: []string{"g.example"}, Cert: goodCert, Key: secret},
		{Source: "ns/mismatch", Hosts: []string{"m.example"}, Cert: goodCert, Key: otherKey},
		{Source: "ns/swapped", Hosts: []string{"s.example"}, Cert: otherKey, Key: otherCert},
		{Source: "ns/wrong-host", Hosts: []string{"wrong.example"}, Cert: otherCert, Key: otherKey},
		{Source: "ns/expired", Cert: expiredCert, Key: expiredKey},
		{Source: "ns/zz-dup", Hosts: []string{"good.example"}, Cert: otherCert, Key: otherKey},
	}})
	for _, w := range warns {
		p.log.Warn("ingress warning", "warning", w.String())
	}
	want := map[string]string{
		"ns/garbage-key": "tls certificate and key",
		"ns/mismatch":    "private key does not match",
		"ns/swapped":     "tls certificate and key",
		"ns/wrong-host":  `does not name host "wrong.example"`,
		"ns/expired":     "expired",
		"ns/zz-dup":      "from ns/good, which wins",
	}
	for _, w := range warns {
		frag, ok := want[w.Source]
		if !ok || !strings.Contains(w.Message, frag) {
			t.Errorf("unexpected warning %q", w)
		}
		delete(want, w.Source)
	}
	for src := range want {
		t.Errorf("no warning about %s", src)
	}
	all := fmt.Sprint(warns) + logged.String()
	for _, k := range [][]byte{goodKey, otherKey, secret, []byte("U0VDUkVULUtFWS1NQVRFUklBTA"), []byte("SECRET-KEY-MATERIAL")} {
		for _, line := range strings.Split(strings.TrimSpace(string(k)), "\n") {
			if strings.Contains(line, "-----") {
				continue
			}
			if strings.Contains(all, line) {
				t.Errorf("key material %q appears in warnings or logs", line)
			}
		}
	}
	// The good entry is served for its host; the expired one is kept
	// (for the names in its certificate) but reported.
	c := p.table.Load().certs
	if got := c.get("good.example").Leaf.Subject.CommonName; got != "good" {
		t.Errorf("good.example gets %q", got)
	}
	if got := c.get("old.example").Leaf.Subject.CommonName; got != "expired" {
		t.Errorf("old.example gets %q", got)
	}
}

// TestListenAndServeFollowsPorts runs the proxy on the machine's address
// (loopback here) with the Ingress's ports, and moves it to other ports.
func TestListenAndServeFollowsPorts(t *testing.T) {
	b := newBackendServer(t, "b")
	p, err := New(Options{Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ports := func() (int32, int32) { return int32(refusedAddr(t).Port()), int32(refusedAddr(t).Port()) }
	in := ingressFor("", b.addr())
	in.HTTPPort, in.HTTPSPort = ports()
	p.Update(in)
	served := make(chan error, 1)
	go func() { served <- p.ListenAndServe(t.Context()) }()
	waitAnswer(t, in.HTTPPort, true)
	waitTLS(t, in.HTTPSPort)

	old := in.HTTPPort
	moved := ingressFor("", b.addr())
	moved.HTTPPort, moved.HTTPSPort = ports()
	p.Update(moved)
	waitAnswer(t, moved.HTTPPort, true)
	waitTLS(t, moved.HTTPSPort)
	waitAnswer(t, old, false)

	// HTTP and HTTPS trade ports.
	swapped := ingressFor("", b.addr())
	swapped.HTTPPort, swapped.HTTPSPort = moved.HTTPSPort, moved.HTTPPort
	p.Update(swapped)
	waitAnswer(t, swapped.HTTPPort, true)
	waitTLS(t, swapped.HTTPSPort)

	if err := p.Shutdown(t.Context()); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("ListenAndServe: %v", err)
	}
	waitAnswer(t, swapped.HTTPPort, false)
}

func TestListenAndServeBindError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().(*net.TCPAddr).Port
	p, err := New(Options{Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	p.Update(&api.Ingress{HTTPPort: int32(taken), HTTPSPort: int32(taken)})
	if err := p.ListenAndServe(t.Context()); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("ListenAndServe on a taken port: %v", err)
	}
	q, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.ListenAndServe(t.Context()); err == nil {
		t.Error("ListenAndServe without addresses succeeded")
	}
}

// waitAnswer waits until plain HTTP on port answers (or refuses).
func waitAnswer(t *testing.T, port int32, answers bool) {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get(url)
		if err == nil {
			res.Body.Close()
		}
		if answers && err == nil && res.StatusCode == 200 || !answers && err != nil && isConnRefused(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %d: answers=%v not reached (last %v)", port, answers, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitTLS(t *testing.T, port int32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TLS on port %d: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
