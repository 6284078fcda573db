package ingress

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"berth.dev/berth/nodes/api"
)

// testCA issues certificates for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "berth test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue makes a PEM certificate and key for names, named cn, valid until
// notAfter (an hour from now when zero).
func (ca *testCA) issue(t testing.TB, cn string, notAfter time.Time, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if notAfter.IsZero() {
		notAfter = time.Now().Add(time.Hour)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-2 * time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// tlsEntry makes an IngressTLS from a freshly issued certificate.
func (ca *testCA) tlsEntry(t testing.TB, source string, hosts ...string) api.IngressTLS {
	cert, key := ca.issue(t, source, time.Time{}, hosts...)
	return api.IngressTLS{Source: source, Hosts: hosts, Cert: cert, Key: key}
}

// testBackendServer is an HTTP server on loopback that answers with its
// name and echoes what the proxy sent it.
type testBackendServer struct {
	*httptest.Server
	name string
	hits atomic.Int64
}

func newBackendServer(t testing.TB, name string) *testBackendServer {
	return newBackendServerWith(t, name, nil)
}

// newBackendServerWith is newBackendServer with its handler wrapped.
func newBackendServerWith(t testing.TB, name string, wrap func(http.Handler) http.Handler) *testBackendServer {
	t.Helper()
	b := &testBackendServer{name: name}
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Backend", name)
		for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "X-Real-Ip"} {
			w.Header()["Echo-"+h] = r.Header.Values(h)
		}
		w.Header().Set("Echo-Host", r.Host)
		w.Header().Set("Echo-Uri", r.RequestURI)
		fmt.Fprintf(w, "%s %s", name, body)
	})
	if wrap != nil {
		h = wrap(h)
	}
	b.Server = httptest.NewServer(h)
	t.Cleanup(b.Close)
	return b
}

// addr is the backend's address as an endpoint.
func (b *testBackendServer) addr() netip.AddrPort {
	return netip.MustParseAddrPort(b.Listener.Addr().String())
}

// refusedAddr is a loopback address where nothing listens.
func refusedAddr(t testing.TB) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	return a
}

// running is a Proxy serving on loopback.
type running struct {
	*Proxy
	httpURL   string
	httpsAddr string
	httpsPort int
	client    *http.Client // plain HTTP, no redirects followed
}

// startProxy serves a new Proxy on loopback until the test ends.
func startProxy(t testing.TB, o Options) *running {
	t.Helper()
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	hln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, []net.Listener{hln}, []net.Listener{sln}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &running{
		Proxy:     p,
		httpURL:   "http://" + hln.Addr().String(),
		httpsAddr: sln.Addr().String(),
		httpsPort: sln.Addr().(*net.TCPAddr).Port,
		client: &http.Client{
			Transport:     tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Timeout:       30 * time.Second,
		},
	}
}

// get sends a request for host and path and returns status, the
// X-Backend header and the body.
func (r *running) get(t testing.TB, method, host, path string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, r.httpURL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	res, err := r.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s%s: read body: %v", method, host, path, err)
	}
	return res, string(b)
}

// httpsClient trusts ca and sends SNI serverName to the proxy's HTTPS
// listener, whatever the URL says.
func (r *running) httpsClient(ca *testCA, serverName string) *http.Client {
	cfg := &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12}
	if ca != nil {
		cfg.RootCAs = ca.pool
	} else {
		cfg.InsecureSkipVerify = true
	}
	tr := &http.Transport{
		TLSClientConfig: cfg,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, r.httpsAddr)
		},
		ForceAttemptHTTP2: true,
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// peerCert is the certificate the proxy's HTTPS listener presents for
// serverName.
func (r *running) peerCert(t testing.TB, serverName string) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", r.httpsAddr, &tls.Config{ServerName: serverName, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("handshake for %q: %v", serverName, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// testLogger logs to the test at debug level, which also runs the
// request log.
func testLogger(t testing.TB) *slog.Logger { return testLoggerAt(t, true) }

// testLoggerAt logs to the test, at debug level or from info.
func testLoggerAt(t testing.TB, debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// ingressFor routes every path of host to endpoints.
func ingressFor(host string, eps ...netip.AddrPort) *api.Ingress {
	return &api.Ingress{Rules: []api.IngressRule{{
		Source: "ns/ing", Host: host,
		Paths: []api.IngressPath{{Path: "/", PathType: "Prefix", Backend: api.IngressBackend{Service: "ns/svc:80", Endpoints: eps}}},
	}}}
}

// isConnRefused says whether err is a refused connection.
func isConnRefused(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}
