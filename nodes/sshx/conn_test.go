package sshx

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"berth.dev/berth/nodes/sshx/sshtest"
)

// logBuffer collects slog output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func testLogger(t testing.TB) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sshx log:\n%s", lb.String())
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

func keyAuth(t testing.TB, s *sshtest.Server) Auth {
	t.Helper()
	a, err := KeyFile(s.ClientKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func newConn(t testing.TB, s *sshtest.Server, cfg Config) *Conn {
	t.Helper()
	if !cfg.Auth.valid() {
		cfg.Auth = keyAuth(t, s)
	}
	if cfg.Logger == nil {
		cfg.Logger, _ = testLogger(t)
	}
	c, err := New(s.Machine("lab1"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustRun(t testing.TB, c *Conn, cmd string) string {
	t.Helper()
	out, errb, code, err := c.Run(ctxT(t, 10*time.Second), cmd, nil)
	if err != nil || code != 0 {
		t.Fatalf("run %q: exit %d, %v; stderr: %s", cmd, code, err, errb)
	}
	return string(out)
}

func TestRunExitCodesAndStreams(t *testing.T) {
	s := sshtest.Start(t, sshtest.Options{})
	c := newConn(t, s, Config{})
	ctx := ctxT(t, 10*time.Second)

	out, errb, code, err := c.Run(ctx, "echo out; echo err >&2; exit 3", nil)
	if err != nil || code != 3 || string(out) != "out\n" || string(errb) != "err\n" {
		t.Errorf("Run = %q, %q, %d, %v; want out, err, 3, nil", out, errb, code, err)
	}
	if _, _, code, err := c.Run(ctx, "true", nil); err != nil || code != 0 {
		t.Errorf("true: %d, %v", code, err)
	}

	// stdin arrives whole, and ends with EOF.
	in := make([]byte, 3<<20+17)
	rand.Read(in)
	sum := sha256.Sum256(in)
	out, _, code, err = c.Run(ctx, "sha256sum", bytes.NewReader(in))
	if err != nil || code != 0 || !strings.HasPrefix(string(out), hex.EncodeToString(sum[:])) {
		t.Errorf("sha256sum of stdin = %q, %d, %v; want %x", out, code, err, sum)
	}
	// A command that does not read its stdin still exits normally.
	if _, _, code, err := c.Run(ctx, "exit 4", bytes.NewReader(in)); err != nil || code != 4 {
		t.Errorf("exit 4 with unread stdin: %d, %v", code, err)
	}

	// Arguments survive quoting.
	word := "it's a $HOME `id` test;\n"
	if got := mustRun(t, c, "printf %s "+Quote(word)); got != word {
		t.Errorf("quoted word came back as %q", got)
	}

	// A command killed by a signal is an error.
	if _, _, _, err := c.Run(ctx, "kill -9 $$", nil); err == nil || !strings.Contains(err.Error(), "SIGKILL") {
		t.Errorf("command killed by SIGKILL: err %v", err)
	}
}

func TestRunOutputLimit(t *testing.T) {
	s := sshtest.Start(t, sshtest.Options{})
	c := newConn(t, s, Config{MaxOutput: 1000})
	out, _, code, err := c.Run(ctxT(t, 10*time.Second), "head -c 5000 /dev/zero; exit 2", nil)
	if !errors.Is(err, ErrOutputLimit) || len(out) != 1000 || code != 2 {
		t.Errorf("Run = %d bytes, exit %d, %v; want 1000 bytes, exit 2, ErrOutputLimit", len(out), code, err)
	}
}

func TestRunContextKillsCommand(t *testing.T) {
	s := sshtest.Start(t, sshtest.Options{})
	c := newConn(t, s, Config{})
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, _, _, err := c.Run(ctx, "echo $$ > "+Quote(filepath.Join(dir, "pid"))+"; exec sleep 30", nil)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("Run = %v after %v; want the context's error soon", err, time.Since(start))
	}
	b, _ := os.ReadFile(filepath.Join(dir, "pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid == 0 {
		t.Fatalf("the command did not start within its second")
	}
	deadline := time.Now().Add(5 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the command (pid %d) still runs after its context ended", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The connection is still good.
	mustRun(t, c, "true")
}

func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && len(b) > i+2 && b[i+2] != 'Z'
}

func TestHostKeyMismatchRefused(t *testing.T) {
	s := sshtest.Start(t, sshtest.Options{})
	other, _ := genSigner(t)
	m := s.Machine("lab1")
	m.Spec.SSH.HostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(other.PublicKey())))
	log, _ := testLogger(t)
	c, err := New(m, Config{Auth: keyAuth(t, s), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	marker := filepath.Join(t.TempDir(), "ran")
	_, _, _, err = c.Run(ctxT(t, 10*time.Second), "touch "+Quote(marker), nil)
	if !errors.Is(err, ErrHostKeyMismatch) {
		t.Fatalf("Run with a wrong pin: %v, want ErrHostKeyMismatch", err)
	}
	msg := err.Error()
	for _, want := range []string{"lab1", ssh.FingerprintSHA256(s.HostKey), ssh.FingerprintSHA256(other.PublicKey()), "spec.ssh.hostKey"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	var hke *HostKeyError
	if !errors.As(err, &hke) || !bytes.Equal(hke.Offered.Marshal(), s.HostKey.Marshal()) {
		t.Errorf("error does not carry the offered key: %#v", hke)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Errorf("the command ran on a machine with the wrong host key")
	}
	if strings.Contains(s.Log(), "Accepted publickey") {
		t.Errorf("the client authenticated to a machine with the wrong host key:\n%s", s.Log())
	}
}

// TestPinnedKeyTypeMissing: a machine without a key of the pinned type
// (an RSA key pinned, only ed25519 served) is a mismatch, not an
// unreachable machine.
func TestPinnedKeyTypeMissing(t *testing.T) {
	s := sshtest.Start(t, sshtest.Options{})
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	m := s.Machine("lab1")
	m.Spec.SSH.HostKey = string(ssh.MarshalAuthorizedKey(pub))
	c, err := New(m, Config{Auth: keyAuth(t, s)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Connect(ctxT(t, 10*time.Second))
	if !errors.Is(err, ErrHostKeyMismatch) || !strings.Contains(err.Error(), ssh.FingerprintSHA256(pub)) || !strings.Contains(err.Error(), "lab1") {
		t.Errorf("Connect with an RSA pin to an ed25519-only sshd: %v", err)
	}
}

func TestKnownHosts(t *testing.T) {
	s := sshtest.Start(t, sshtest.Options{})
	m := s.Machine("lab1")
	m.Spec.SSH.HostKey = "" // known_hosts decides
	kh := filepath.Join(t.TempDir(), "ssh", "known_hosts")
	auth := keyAuth(t, s)
	ctx := ctxT(t, 10*time.Second)

	// Unknown and not accepted: refused, nothing recorded.
	log, logs := testLogger(t)
	c, err := New(m, Config{Auth: auth, KnownHostsFile: kh, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Connect(ctx)
	c.Close()
	if !errors.Is(err, ErrUnknownHost) {
		t.Fatalf("Connect to an unknown host: %v, want ErrUnknownHost", err)
	}
	for _, want := range []string{"lab1", ssh.FingerprintSHA256(s.HostKey), kh, "spec.ssh.hostKey"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := os.Stat(kh); !os.IsNotExist(err) {
		t.Errorf("known_hosts written although the key was refused: %v", err)
	}

	// Accepted: connected, recorded in a new 0600 file, logged.
	c, err = New(m, Config{Auth: auth, KnownHostsFile: kh, AcceptUnknown: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("Connect accepting unknown keys: %v", err)
	}
	c.Close()
	b, err := os.ReadFile(kh)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), s.KnownHostsLine()+"\n"; got != want {
		t.Errorf("known_hosts = %q, want %q", got, want)
	}
	if fi, _ := os.Stat(kh); fi.Mode().Perm() != 0o600 {
		t.Errorf("known_hosts mode %v, want 0600", fi.Mode().Perm())
	}
	if !strings.Contains(logs.String(), "accepted unknown host key") || !strings.Contains(logs.String(), ssh.FingerprintSHA256(s.HostKey)) {
		t.Errorf("no log line for the accepted key:\n%s", logs)
	}

	// Now known: connects without accepting anything.
	c, err = New(m, Config{Auth: auth, KnownHostsFile: kh, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRun(t, c, "echo known"); got != "known\n" {
		t.Errorf("got %q", got)
	}
	c.Close()

	// A different key on record: refused even when accepting unknown keys.
	other, _ := genSigner(t)
	wrong := filepath.Join(t.TempDir(), "known_hosts")
	line := "# comment\n" + knownhosts.Line([]string{knownhosts.Normalize(s.Addr())}, other.PublicKey()) + "\n"
	os.WriteFile(wrong, []byte(line), 0o600)
	c, err = New(m, Config{Auth: auth, KnownHostsFile: wrong, AcceptUnknown: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Connect(ctx)
	c.Close()
	if !errors.Is(err, ErrHostKeyMismatch) {
		t.Fatalf("Connect with another key on record: %v, want ErrHostKeyMismatch", err)
	}
	for _, want := range []string{"lab1", ssh.FingerprintSHA256(s.HostKey), ssh.FingerprintSHA256(other.PublicKey()), "line 2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if b, _ := os.ReadFile(wrong); string(b) != line {
		t.Errorf("known_hosts changed after a mismatch: %q", b)
	}
}

func genSigner(t testing.TB) (ssh.Signer, ed25519.PrivateKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, priv
}

func TestKeyFileRefusals(t *testing.T) {
	dir := t.TempDir()
	_, priv := genSigner(t)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open")
	os.WriteFile(open, pem.EncodeToMemory(block), 0o644)
	if _, err := KeyFile(open); err == nil || !strings.Contains(err.Error(), "chmod 600") || !strings.Contains(err.Error(), "0644") {
		t.Errorf("KeyFile of a 0644 key: %v, want a refusal that says chmod 600", err)
	}
	os.Chmod(open, 0o640)
	if _, err := KeyFile(open); err == nil {
		t.Errorf("KeyFile of a 0640 key succeeded")
	}
	os.Chmod(open, 0o600)
	a, err := KeyFile(open)
	if err != nil {
		t.Fatalf("KeyFile of a 0600 key: %v", err)
	}
	if s := a.String(); !strings.Contains(s, "SHA256:") || strings.Contains(s, "PRIVATE") {
		t.Errorf("Auth.String() = %q", s)
	}

	locked := filepath.Join(dir, "locked")
	block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(locked, pem.EncodeToMemory(block), 0o600)
	if _, err := KeyFile(locked); err == nil || !strings.Contains(err.Error(), "ssh-agent") {
		t.Errorf("KeyFile of an encrypted key: %v, want advice to use ssh-agent", err)
	}
	if _, err := KeyFile(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("KeyFile of a missing file succeeded")
	}

	t.Setenv("SSH_AUTH_SOCK", "")
	if _, err := AuthFrom(""); err == nil || !strings.Contains(err.Error(), "--ssh-key") {
		t.Errorf("AuthFrom without key or agent: %v", err)
	}
}

func TestSSHAgentAuth(t *testing.T) {
	s := sshtest.Start(t, sshtest.Options{})
	b, err := os.ReadFile(s.ClientKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ssh.ParseRawPrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: raw}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { agent.ServeAgent(keyring, c); c.Close() }()
		}
	}()
	t.Setenv("SSH_AUTH_SOCK", sock)
	a, err := AuthFrom("")
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(t, s, Config{Auth: a})
	if got := mustRun(t, c, "echo agent"); got != "agent\n" {
		t.Errorf("got %q", got)
	}
}

func TestAuthRefused(t *testing.T) {
	s := sshtest.Start(t, sshtest.Options{})
	_, priv := genSigner(t)
	block, _ := ssh.MarshalPrivateKey(priv, "")
	kf := filepath.Join(t.TempDir(), "stranger")
	os.WriteFile(kf, pem.EncodeToMemory(block), 0o600)
	a, err := KeyFile(kf)
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(t, s, Config{Auth: a})
	if err := c.Connect(ctxT(t, 10*time.Second)); !errors.Is(err, ErrAuth) {
		t.Errorf("Connect with an unauthorized key: %v, want ErrAuth", err)
	}
}

func TestUnreachable(t *testing.T) {
	s := sshtest.Start(t, sshtest.Options{})
	s.Kill()
	c := newConn(t, s, Config{MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	if err := c.Connect(ctxT(t, 10*time.Second)); !errors.Is(err, ErrUnreachable) {
		t.Errorf("Connect to a dead port: %v, want ErrUnreachable", err)
	}
}

// TestHandshakeDeadline: a machine that accepts TCP but never speaks SSH
// (here, a listener that reads nothing) is given up on after the
// handshake timeout, not after the kernel's TCP timeouts.
func TestHandshakeDeadline(t *testing.T) {
	s := sshtest.Start(t, sshtest.Options{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	m := s.Machine("silent")
	m.Spec.SSH.Port = int32(l.Addr().(*net.TCPAddr).Port)
	c, err := New(m, Config{Auth: keyAuth(t, s), HandshakeTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	err = c.Connect(context.Background())
	if !errors.Is(err, ErrUnreachable) || time.Since(start) > 3*time.Second {
		t.Errorf("Connect to a silent server = %v after %v; want ErrUnreachable after about 300ms", err, time.Since(start))
	}
	t.Logf("gave up after %v: %v", time.Since(start).Round(time.Millisecond), err)
}

// TestKeepaliveAndReconnect freezes sshd (a hung machine: TCP open, nothing
// answering): keepalives notice within their budget and close the
// connection; dials fail on the handshake deadline while it is hung; once
// it is back (killed and restarted), the same Conn works again.
func TestKeepaliveAndReconnect(t *testing.T) {
	s := sshtest.Start(t, sshtest.Options{})
	c := newConn(t, s, Config{
		KeepaliveInterval: 250 * time.Millisecond,
		KeepaliveMissed:   4,
		HandshakeTimeout:  500 * time.Millisecond,
		MinBackoff:        20 * time.Millisecond,
		MaxBackoff:        100 * time.Millisecond,
	})
	mustRun(t, c, "true")
	// Keepalives answered: the connection stays up over several budgets.
	time.Sleep(2500 * time.Millisecond)
	first := c.current()
	if !first.alive() {
		t.Fatalf("connection ended while sshd answered keepalives: %v", first.lost())
	}

	s.Freeze()
	frozen := time.Now()
	select {
	case <-first.done:
		t.Logf("hung server noticed after %v: %v", time.Since(frozen).Round(time.Millisecond), first.lost())
	case <-time.After(5 * time.Second):
		t.Fatalf("connection to a frozen sshd still up after 5s")
	}
	if err := c.Connect(ctxT(t, 2*time.Second)); !errors.Is(err, ErrUnreachable) {
		t.Errorf("Connect while sshd is frozen: %v, want ErrUnreachable (handshake deadline)", err)
	}

	s.Kill()
	s.Restart()
	if got := mustRun(t, c, "echo back"); got != "back\n" {
		t.Errorf("after restart: %q", got)
	}
	if c.current() == first {
		t.Errorf("still on the old connection")
	}
}

// TestRedialAfterIdleDeath: with keepalives off, a connection that died
// while idle is found dead on the next use, which redials and succeeds
// instead of failing.
func TestRedialAfterIdleDeath(t *testing.T) {
	s := sshtest.Start(t, sshtest.Options{})
	c := newConn(t, s, Config{KeepaliveInterval: -1})
	mustRun(t, c, "true")
	s.Kill()
	s.Restart()
	if got := mustRun(t, c, "echo again"); got != "again\n" {
		t.Errorf("got %q", got)
	}
	srv := serveUnixHTTP(t, filepath.Join(shortTempDir(t), "api.sock"))
	s.Kill()
	s.Restart()
	nc, err := c.DialUnix(ctxT(t, 10*time.Second), srv)
	if err != nil {
		t.Fatalf("DialUnix after the server restarted: %v", err)
	}
	nc.Close()
}

// current is the connection in use, for tests.
func (c *Conn) current() *client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// TestMaxChannels starts 9 commands at once: all succeed (the ninth waits
// for a channel rather than being refused), and the commands themselves,
// counting each other on the machine, never see more than 8 running.
// (sshd's MaxSessions cannot be the judge: it frees a session only once
// its command has been reaped, a moment after the client saw it close.)
func TestMaxChannels(t *testing.T) {
	s := sshtest.Start(t, sshtest.Options{})
	c := newConn(t, s, Config{})
	mustRun(t, c, "true")
	dir := t.TempDir()
	script := fmt.Sprintf(`d=$(mktemp -d %s/s.XXXXXX) && ls %s | wc -l && sleep 0.4 && rmdir "$d"`, Quote(dir), Quote(dir))
	var wg sync.WaitGroup
	results := make([]string, 9)
	errs := make([]error, 9)
	start := time.Now()
	for i := range 9 {
		wg.Go(func() {
			out, errb, code, err := c.Run(ctxT(t, 20*time.Second), script, nil)
			if err == nil && code != 0 {
				err = fmt.Errorf("exit %d: %s", code, errb)
			}
			results[i], errs[i] = strings.TrimSpace(string(out)), err
		})
	}
	wg.Wait()
	took := time.Since(start)
	most := 0
	for i := range 9 {
		if errs[i] != nil {
			t.Errorf("command %d: %v", i, errs[i])
			continue
		}
		n, _ := strconv.Atoi(results[i])
		most = max(most, n)
	}
	if most > 8 || most < 2 {
		t.Errorf("at most %d commands ran at once, want 8 or fewer (and some concurrency)", most)
	}
	if took < 750*time.Millisecond {
		t.Errorf("9 commands of 0.4s on 8 channels took %v; the ninth did not wait", took)
	}
	t.Logf("9 commands: at most %d at once, %v", most, took.Round(time.Millisecond))

	// Forwarded connections hold channels too: with 8 open, a command
	// waits until one closes.
	sock := serveUnixHTTP(t, filepath.Join(shortTempDir(t), "api.sock"))
	var conns []net.Conn
	for range 8 {
		nc, err := c.DialUnix(ctxT(t, 5*time.Second), sock)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, nc)
	}
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, _, _, err := c.Run(short, "true", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run with 8 channels held: %v, want to wait until its context ends", err)
	}
	conns[0].Close()
	conns[0].Close() // closing twice releases once
	mustRun(t, c, "true")
	for _, nc := range conns[1:] {
		nc.Close()
	}
	if n := len(c.current().sem); n != 0 {
		t.Errorf("%d channel tokens held after everything closed", n)
	}
}

// shortTempDir is a temporary directory with a short path: a unix socket
// path holds at most 107 bytes, and t.TempDir's can be long.
func shortTempDir(t testing.TB) string {
	d, err := os.MkdirTemp("", "sshx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// serveUnixHTTP serves GET /v1/version on a unix socket at path.
func serveUnixHTTP(t testing.TB, path string) string {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/version" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"version":"test","apiVersion":"v1"}`)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return path
}

func TestDialUnix(t *testing.T) {
	s := sshtest.Start(t, sshtest.Options{})
	c := newConn(t, s, Config{})
	dir := shortTempDir(t)
	sock := serveUnixHTTP(t, filepath.Join(dir, "agent.sock"))
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return c.DialUnix(ctx, sock)
	}}}
	defer hc.CloseIdleConnections()
	for range 3 {
		resp, err := hc.Get("http://agent/v1/version")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"apiVersion":"v1"`) {
			t.Errorf("GET /v1/version = %s %q", resp.Status, b)
		}
	}
	_, err := c.DialUnix(ctxT(t, 5*time.Second), filepath.Join(dir, "missing.sock"))
	var oce *ssh.OpenChannelError
	if !errors.As(err, &oce) {
		t.Errorf("DialUnix of a missing socket: %v, want an *ssh.OpenChannelError", err)
	}
	// The refusal did not cost the connection.
	mustRun(t, c, "true")
}

func TestBackoff(t *testing.T) {
	min, max := 500*time.Millisecond, 30*time.Second
	for _, c := range []struct {
		n    int
		want time.Duration
	}{{1, 500 * time.Millisecond}, {2, time.Second}, {3, 2 * time.Second}, {7, 30 * time.Second}, {100, 30 * time.Second}} {
		if got := backoff(c.n, min, max, 0.5); got != c.want {
			t.Errorf("backoff(%d) = %v, want %v", c.n, got, c.want)
		}
	}
	if lo, hi := backoff(3, min, max, 0), backoff(3, min, max, 0.999); lo != 1600*time.Millisecond || hi < 2390*time.Millisecond || hi > 2400*time.Millisecond {
		t.Errorf("jitter bounds %v..%v, want 1.6s..2.4s", lo, hi)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err == nil {
		t.Errorf("a Config without a key validated")
	}
	a := Auth{source: "test", sock: "/x"}
	if err := (Config{Auth: a, AcceptUnknown: true}).Validate(); err == nil {
		t.Errorf("AcceptUnknown without a known_hosts file validated")
	}
	if err := (Config{Auth: a, MinBackoff: time.Minute, MaxBackoff: time.Second}).Validate(); err == nil {
		t.Errorf("min backoff over max validated")
	}
	if err := (Config{Auth: a}).Validate(); err != nil {
		t.Errorf("valid Config: %v", err)
	}
}
