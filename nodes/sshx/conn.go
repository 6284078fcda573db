package sshx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"berth.dev/berth/render/api/v1alpha1"
)

// Connection errors callers act on.
var (
	// ErrUnreachable: the machine could not be reached: no TCP
	// connection, or no SSH handshake within the deadline. Retryable.
	ErrUnreachable = errors.New("machine unreachable")
	// ErrConnectionLost: the connection ended while a command or channel
	// was using it (the machine went away, or stopped answering
	// keepalives). Whether the command ran is unknown. Retryable.
	ErrConnectionLost = errors.New("connection lost")
	// ErrAuth: the machine refused the controller's key.
	ErrAuth = errors.New("ssh authentication refused")
	// ErrOutputLimit: a command wrote more than Config.MaxOutput to
	// stdout or stderr; the rest was dropped.
	ErrOutputLimit = errors.New("command output over the limit")
	// ErrClosed: the Conn was closed.
	ErrClosed = errors.New("ssh connection closed")
)

// Defaults of Config.
const (
	DefaultHandshakeTimeout  = 15 * time.Second
	DefaultKeepaliveInterval = 15 * time.Second
	DefaultKeepaliveMissed   = 3
	// DefaultMaxChannels keeps a connection under sshd's default
	// MaxSessions (10) with room for an interactive ssh of an operator
	// sharing a ControlMaster, which we do not, but someone might.
	DefaultMaxChannels = 8
	DefaultMinBackoff  = 500 * time.Millisecond
	DefaultMaxBackoff  = 30 * time.Second
	DefaultMaxOutput   = 4 << 20
)

// Config says how to reach machines. The zero value of every field but
// Auth means its default.
type Config struct {
	// Auth is the controller's key. Required.
	Auth Auth
	// KnownHostsFile is a known_hosts file (OpenSSH format, [host]:port
	// entries for ports other than 22) vouching for machines whose
	// Machine document pins no spec.ssh.hostKey. A pinned key wins over
	// the file.
	KnownHostsFile string
	// AcceptUnknown accepts the key of a machine that neither a pin nor
	// KnownHostsFile knows, and records it in KnownHostsFile (created
	// 0600). A known key that differs is still refused.
	AcceptUnknown bool
	// HandshakeTimeout bounds the TCP connect and the SSH handshake
	// together.
	HandshakeTimeout time.Duration
	// KeepaliveInterval is how often a keepalive@openssh.com request is
	// sent; KeepaliveMissed unanswered ones in a row close the connection
	// (so a hung machine is noticed after about their product). A
	// negative interval sends none.
	KeepaliveInterval time.Duration
	KeepaliveMissed   int
	// MaxChannels bounds the sessions and forwarded connections open at
	// once on a connection; further ones wait. It must stay below the
	// machine's sshd MaxSessions (10 by default).
	MaxChannels int
	// MinBackoff and MaxBackoff bound the wait between failed dials: the
	// wait doubles from MinBackoff with each failure, up to MaxBackoff,
	// with 20% jitter, and is forgotten after a success.
	MinBackoff, MaxBackoff time.Duration
	// MaxOutput bounds what Run keeps of a command's stdout and of its
	// stderr, each.
	MaxOutput int
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
}

// Validate reports what is wrong with c.
func (c Config) Validate() error {
	var errs []error
	if !c.Auth.valid() {
		errs = append(errs, errors.New("no ssh key: give a key file or an ssh-agent"))
	}
	if c.AcceptUnknown && c.KnownHostsFile == "" {
		errs = append(errs, errors.New("accepting unknown host keys needs a known_hosts file to record them in"))
	}
	if c.HandshakeTimeout < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0 || c.MaxChannels < 0 || c.MaxOutput < 0 || c.KeepaliveMissed < 0 {
		errs = append(errs, errors.New("timeouts, backoffs and limits must not be negative"))
	}
	if c.MinBackoff > 0 && c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff {
		errs = append(errs, fmt.Errorf("min backoff %v is over max backoff %v", c.MinBackoff, c.MaxBackoff))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	def(&c.KeepaliveInterval, DefaultKeepaliveInterval)
	def(&c.MinBackoff, DefaultMinBackoff)
	def(&c.MaxBackoff, DefaultMaxBackoff)
	if c.KeepaliveMissed == 0 {
		c.KeepaliveMissed = DefaultKeepaliveMissed
	}
	if c.MaxChannels == 0 {
		c.MaxChannels = DefaultMaxChannels
	}
	if c.MaxOutput == 0 {
		c.MaxOutput = DefaultMaxOutput
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Conn is an SSH connection to one machine that dials on first use and
// redials, with backoff, on the next use after the connection failed. It
// is safe for concurrent use. Every call takes a context; none is stored.
type Conn struct {
	name, addr, user string
	pinned           ssh.PublicKey
	cfg              Config
	log              *slog.Logger

	mu       sync.Mutex
	cur      *client       // nil, or the latest connection (maybe ended)
	dialing  chan struct{} // closed when the dial under way ends
	failures int           // dials failed in a row
	retryAt  time.Time     // no dial before then
	lastErr  error         // of the last failed dial
	closed   bool
}

// New prepares a connection to m; nothing is dialled until the first use
// (or Connect). The Machine's name, address, SSH user and port (root and
// 22 when unset) and pinned host key are read now.
func New(m *v1alpha1.Machine, cfg Config) (*Conn, error) {
	if m == nil {
		return nil, errors.New("ssh: no machine")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ssh %s: %w", m.Name, err)
	}
	cfg = cfg.withDefaults()
	if m.Spec.Address == "" {
		return nil, fmt.Errorf("ssh %s: the machine has no address", m.Name)
	}
	port := int(m.Spec.SSH.Port)
	if port == 0 {
		port = v1alpha1.DefaultSSHPort
	}
	user := m.Spec.SSH.User
	if user == "" {
		user = v1alpha1.DefaultSSHUser
	}
	c := &Conn{
		name: m.Name,
		addr: net.JoinHostPort(m.Spec.Address, strconv.Itoa(port)),
		user: user,
		cfg:  cfg,
	}
	if m.Spec.SSH.HostKey != "" {
		k, err := ParseHostKey(m.Spec.SSH.HostKey)
		if err != nil {
			return nil, fmt.Errorf("ssh %s: spec.ssh.hostKey: %w", m.Name, err)
		}
		c.pinned = k
	}
	c.log = cfg.Logger.With("component", "sshx", "machine", m.Name)
	return c, nil
}

// Machine is the name of the machine this connection reaches.
func (c *Conn) Machine() string { return c.name }

// Address is the host:port dialled.
func (c *Conn) Address() string { return c.addr }

// Connect makes sure a connection is up, dialling if needed.
func (c *Conn) Connect(ctx context.Context) error {
	_, err := c.client(ctx)
	return err
}

// Close closes the connection; later calls fail with ErrClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.cur != nil {
		c.cur.end(ErrClosed)
	}
	return nil
}

// client returns a live connection, dialling (or waiting for another
// caller's dial) when there is none. After failed dials it waits out the
// backoff if ctx allows, and otherwise fails at once with the last error.
func (c *Conn) client(ctx context.Context) (*client, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		if c.cur != nil && c.cur.alive() {
			cl := c.cur
			c.mu.Unlock()
			return cl, nil
		}
		if ch := c.dialing; ch != nil {
			c.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if wait := time.Until(c.retryAt); wait > 0 {
			last := c.lastErr
			c.mu.Unlock()
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
				return nil, fmt.Errorf("not redialling for another %v after %d failed dials: %w", wait.Round(time.Millisecond), c.failures, last)
			}
			t := time.NewTimer(wait)
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
		}
		ch := make(chan struct{})
		c.dialing = ch
		c.mu.Unlock()

		cl, err := c.dial(ctx)

		c.mu.Lock()
		c.dialing = nil
		close(ch)
		if err != nil {
			if ctx.Err() == nil { // a caller giving up is not the machine failing
				c.failures++
				wait := backoff(c.failures, c.cfg.MinBackoff, c.cfg.MaxBackoff, rand.Float64())
				c.retryAt = time.Now().Add(wait)
				c.lastErr = err
				c.log.Warn("ssh dial failed", "address", c.addr, "failures", c.failures, "retry_in", wait.Round(time.Millisecond), "error", err)
			}
			c.mu.Unlock()
			return nil, err
		}
		if c.closed {
			c.mu.Unlock()
			cl.end(ErrClosed)
			return nil, ErrClosed
		}
		c.failures, c.retryAt, c.lastErr = 0, time.Time{}, nil
		c.cur = cl
		c.mu.Unlock()
		return cl, nil
	}
}

// backoff is the wait after n failed dials in a row: min doubled n-1
// times, at most max, then spread by ±20% (jitter in [0,1)).
func backoff(n int, min, max time.Duration, jitter float64) time.Duration {
	d := min
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return time.Duration(float64(d) * (0.8 + 0.4*jitter))
}

// dial connects and runs the handshake within HandshakeTimeout (and ctx):
// ssh.ClientConfig.Timeout covers only the TCP connect, so the deadline is
// set on the connection itself until the handshake is over.
func (c *Conn) dial(ctx context.Context) (*client, error) {
	hk, err := newHostKeyCheck(c.name, c.addr, c.pinned, c.cfg.KnownHostsFile, c.cfg.AcceptUnknown, c.log)
	if err != nil {
		return nil, err
	}
	methods, release, err := c.cfg.Auth.methods()
	if err != nil {
		return nil, err
	}
	defer release()
	config := &ssh.ClientConfig{
		User:              c.user,
		Auth:              methods,
		HostKeyCallback:   hk.callback,
		HostKeyAlgorithms: hk.algorithms(),
		ClientVersion:     "SSH-2.0-berth",
	}

	start := time.Now()
	deadline := start.Add(c.cfg.HandshakeTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	d := net.Dialer{Deadline: deadline, KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	sc, chans, reqs, err := ssh.NewClientConn(nc, c.addr, config)
	if !stop() { // ctx ended during the handshake
		if err == nil {
			sc.Close()
		}
		nc.Close()
		return nil, ctx.Err()
	}
	if err != nil {
		nc.Close()
		switch {
		case hk.refused != nil:
			return nil, hk.refused
		case strings.Contains(err.Error(), "no common algorithm for host key"):
			// It has no key of the pinned or known types.
			return nil, hk.noKeyOfType()
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, fmt.Errorf("%w: no SSH handshake with %s within %v", ErrUnreachable, c.addr, deadline.Sub(start).Round(time.Millisecond))
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, fmt.Errorf("%w: %s as %s with %s: %v", ErrAuth, c.addr, c.user, c.cfg.Auth, err)
		default:
			return nil, fmt.Errorf("%w: handshake with %s: %v", ErrUnreachable, c.addr, err)
		}
	}
	nc.SetDeadline(time.Time{})
	took := time.Since(start)
	cl := newClient(ssh.NewClient(sc, chans, reqs), c.cfg.MaxChannels, took)
	go cl.watch(c.log)
	if c.cfg.KeepaliveInterval > 0 {
		go cl.keepalive(c.cfg.KeepaliveInterval, c.cfg.KeepaliveMissed)
	}
	c.log.Debug("ssh connected", "address", c.addr, "server", string(sc.ServerVersion()), "handshake", took.Round(time.Microsecond))
	return cl, nil
}

// client is one SSH connection and what bounds its use.
type client struct {
	*ssh.Client
	handshake time.Duration
	sem       chan struct{} // a token per open channel
	done      chan struct{} // closed when the connection has ended

	mu     sync.Mutex
	reason error // why it ended; first one wins
}

func newClient(c *ssh.Client, maxChannels int, handshake time.Duration) *client {
	return &client{Client: c, handshake: handshake, sem: make(chan struct{}, maxChannels), done: make(chan struct{})}
}

func (cl *client) alive() bool {
	select {
	case <-cl.done:
		return false
	default:
		return true
	}
}

// end closes the connection for reason (unless it already ended).
func (cl *client) end(reason error) {
	cl.mu.Lock()
	if cl.reason == nil {
		cl.reason = reason
	}
	cl.mu.Unlock()
	cl.Client.Close()
}

// lost is the error of an operation cut by the connection's end.
func (cl *client) lost() error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.reason == ErrClosed {
		return ErrClosed
	}
	if cl.reason != nil {
		return fmt.Errorf("%w: %v", ErrConnectionLost, cl.reason)
	}
	return ErrConnectionLost
}

// watch waits for the connection to end, for whatever reason, and marks
// it so that the next use redials.
func (cl *client) watch(log *slog.Logger) {
	err := cl.Wait()
	cl.mu.Lock()
	if cl.reason == nil {
		if err == nil {
			err = errors.New("closed by the machine")
		}
		cl.reason = err
	}
	reason := cl.reason
	cl.mu.Unlock()
	close(cl.done)
	if reason != ErrClosed {
		log.Warn("ssh connection lost", "reason", reason)
	}
}

// keepalive sends keepalive@openssh.com every interval and ends the
// connection when missed replies in a row are outstanding. OpenSSH answers
// the request with a failure, which is an answer all the same.
func (cl *client) keepalive(interval time.Duration, missed int) {
	t := time.NewTicker(interval)
	defer t.Stop()
	replies := make(chan error, 1)
	inflight, outstanding := false, 0
	for {
		select {
		case <-cl.done:
			return
		case err := <-replies:
			inflight, outstanding = false, 0
			if err != nil {
				return // the connection is ending; watch notices
			}
		case <-t.C:
			if inflight {
				outstanding++
				if outstanding >= missed {
					cl.end(fmt.Errorf("no answer to keepalive@openssh.com for %v", time.Duration(missed)*interval))
					return
				}
				continue
			}
			inflight = true
			go func() {
				_, _, err := cl.SendRequest("keepalive@openssh.com", true, nil)
				replies <- err
			}()
		}
	}
}

// acquire takes a channel token, waiting for one if all are in use.
func (cl *client) acquire(ctx context.Context) (release func(), err error) {
	select {
	case cl.sem <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-cl.sem }) }, nil
	case <-cl.done:
		return nil, cl.lost()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// open opens a channel (a session or a forwarded connection) with a token
// held, giving up when ctx ends: the open itself cannot be interrupted, so
// a late channel is closed, and its token released, when it arrives.
func open[T io.Closer](ctx context.Context, cl *client, do func() (T, error)) (T, func(), error) {
	var zero T
	release, err := cl.acquire(ctx)
	if err != nil {
		return zero, nil, err
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := do()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			release()
			return zero, nil, r.err
		}
		return r.v, release, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.err == nil {
				r.v.Close()
			}
			release()
		}()
		return zero, nil, ctx.Err()
	}
}

// withChannel opens a channel on a live connection. When a reused
// connection turns out to be dead (the machine rebooted while it sat
// idle), it redials once and tries again: nothing was sent over a channel
// that never opened. A refusal by the machine (*ssh.OpenChannelError) is
// returned as is.
func withChannel[T io.Closer](ctx context.Context, c *Conn, do func(*client) (T, error)) (T, func(), error) {
	var zero T
	for attempt := 0; ; attempt++ {
		cl, err := c.client(ctx)
		if err != nil {
			return zero, nil, err
		}
		v, release, err := open(ctx, cl, func() (T, error) { return do(cl) })
		if err == nil {
			return v, release, nil
		}
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) || ctx.Err() != nil || errors.Is(err, ErrClosed) {
			return zero, nil, err
		}
		// The connection failed under us: let watch mark it, then redial.
		cl.end(fmt.Errorf("open channel: %w", err))
		<-cl.done
		if attempt > 0 {
			return zero, nil, cl.lost()
		}
	}
}

// DialUnix connects to the unix socket at path on the machine through the
// SSH connection (streamlocal forwarding, "direct-streamlocal@openssh.com"),
// as the agent API is reached. The returned connection holds one of the
// connection's channels until it is closed. A socket that does not exist
// or that nothing listens on is an *ssh.OpenChannelError.
func (c *Conn) DialUnix(ctx context.Context, path string) (net.Conn, error) {
	nc, release, err := withChannel(ctx, c, func(cl *client) (net.Conn, error) { return cl.Dial("unix", path) })
	if err != nil {
		return nil, fmt.Errorf("dial unix %s: %w", path, err)
	}
	return &channelConn{Conn: nc, release: release}, nil
}

// UnixDialer returns a dial function for path, as HTTP clients over the
// agent socket take it (agentclient.New, http.Transport.DialContext).
// HTTP clients should keep fewer idle connections than MaxChannels, so
// that commands still find a free channel.
func (c *Conn) UnixDialer(path string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) { return c.DialUnix(ctx, path) }
}

// channelConn releases its channel token when closed.
type channelConn struct {
	net.Conn
	release func()
}

func (c *channelConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// Run runs cmd on the machine with /bin/sh (cmd is a POSIX shell command
// line: quote every argument with Quote; the SSH user's login shell must
// be a POSIX one too, as sh, bash, dash, ksh and zsh are, since it starts
// /bin/sh), with stdin (nil: empty) as its
// standard input, and returns what it wrote, each stream capped at
// Config.MaxOutput, and its exit status. A non-zero exit status is not an
// error; the command being killed by a signal, or its connection ending
// before it did (ErrConnectionLost), is.
//
// When ctx ends, or stdin fails to read, the command and everything it
// started in its process group are killed (sshd does not pass signals to
// root's sessions, and closing a session does not stop its command), and
// Run returns. What the command had received of stdin by then has been
// delivered: a command that writes its input to a file leaves a truncated
// file behind, which is why Bootstrap verifies uploads before using them.
func (c *Conn) Run(ctx context.Context, cmd string, stdin io.Reader) (stdout, stderr []byte, exit int, err error) {
	if strings.IndexByte(cmd, 0) >= 0 {
		return nil, nil, -1, errors.New("run: command holds a NUL byte")
	}
	var cl *client
	sess, release, err := withChannel(ctx, c, func(x *client) (*ssh.Session, error) {
		cl = x
		return x.NewSession()
	})
	if err != nil {
		return nil, nil, -1, err
	}
	defer release()
	defer sess.Close()

	outBuf := &cappedBuffer{max: c.cfg.MaxOutput}
	errBuf := &cappedBuffer{max: c.cfg.MaxOutput}
	sess.Stdout, sess.Stderr = outBuf, errBuf
	var in io.WriteCloser
	if stdin != nil {
		if in, err = sess.StdinPipe(); err != nil {
			return nil, nil, -1, err
		}
	}
	// The login shell says which process group to kill should the command
	// have to be stopped, then becomes /bin/sh running cmd.
	if err := sess.Start(pidMarkerCmd + "; exec /bin/sh -c " + Quote(cmd)); err != nil {
		return nil, nil, -1, fmt.Errorf("start command: %w", err)
	}

	readErr := make(chan error, 1)
	if in != nil {
		go func() {
			// A write error means the command stopped reading; its exit
			// status tells the rest.
			r := &errReader{r: stdin}
			io.Copy(in, r)
			if r.err != nil {
				readErr <- r.err
				return
			}
			in.Close()
		}()
	}
	waited := make(chan error, 1)
	go func() { waited <- sess.Wait() }()

	var werr error
	select {
	case werr = <-waited:
	case err := <-readErr:
		c.abort(sess, release, errBuf)
		return outBuf.Bytes(), stripPidMarker(errBuf.Bytes()), -1, fmt.Errorf("read stdin: %w", err)
	case <-ctx.Done():
		c.abort(sess, release, errBuf)
		return outBuf.Bytes(), stripPidMarker(errBuf.Bytes()), -1, ctx.Err()
	}
	stdout, stderr = outBuf.Bytes(), stripPidMarker(errBuf.Bytes())

	var ee *ssh.ExitError
	var em *ssh.ExitMissingError
	switch {
	case werr == nil:
		exit = 0
	case errors.As(werr, &ee) && ee.Signal() != "":
		return stdout, stderr, -1, fmt.Errorf("command killed by SIG%s", ee.Signal())
	case errors.As(werr, &ee):
		exit = ee.ExitStatus()
	case errors.As(werr, &em), !cl.alive():
		return stdout, stderr, -1, cl.lost()
	default:
		return stdout, stderr, -1, werr
	}
	if n := outBuf.Dropped() + errBuf.Dropped(); n > 0 {
		return stdout, stderr, exit, fmt.Errorf("%w: %d bytes over %d dropped", ErrOutputLimit, n, c.cfg.MaxOutput)
	}
	return stdout, stderr, exit, nil
}

// pidMarkerCmd writes the marker that pidFromMarker reads: the pid of the
// session's shell, which sshd made a session and process group leader,
// and which exec turns into the command.
const pidMarkerCmd = `printf 'berth-sshx-pid:%d\n' $$ >&2`

const pidMarker = "berth-sshx-pid:"

// abortTimeout bounds the kill of an aborted command; markerWait the wait
// for its pid.
const (
	abortTimeout = 5 * time.Second
	markerWait   = time.Second
)

// abort stops a command whose caller gave up: its session is closed (and
// its channel released), and its process group killed through a new
// session.
func (c *Conn) abort(sess *ssh.Session, release func(), stderr *cappedBuffer) {
	sess.Signal(ssh.SIGKILL) // honoured for non-root users only
	// A command aborted right after it started may not have said its pid
	// yet: give it a moment.
	pid := pidFromMarker(stderr.Bytes())
	for deadline := time.Now().Add(markerWait); pid == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		pid = pidFromMarker(stderr.Bytes())
	}
	sess.Close()
	release()
	if pid <= 1 {
		c.log.Warn("aborted a command whose pid never arrived; it may run on")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), abortTimeout)
	defer cancel()
	// dash's kill takes no "--"; a negative pid is the process group.
	kill := fmt.Sprintf("kill -KILL -%d %d 2>/dev/null; true", pid, pid)
	if _, _, _, err := c.Run(ctx, kill, nil); err != nil {
		c.log.Warn("could not kill an aborted command", "pid", pid, "error", err)
	}
}

// pidFromMarker finds the pid marker at the start of stderr (after
// whatever the login shell's rc files may have printed).
func pidFromMarker(b []byte) int {
	i := bytes.Index(b, []byte(pidMarker))
	if i < 0 {
		return 0
	}
	rest := b[i+len(pidMarker):]
	j := bytes.IndexByte(rest, '\n')
	if j < 0 {
		return 0
	}
	pid, err := strconv.Atoi(string(rest[:j]))
	if err != nil {
		return 0
	}
	return pid
}

// stripPidMarker removes the pid marker's line from stderr.
func stripPidMarker(b []byte) []byte {
	i := bytes.Index(b, []byte(pidMarker))
	if i < 0 {
		return b
	}
	j := bytes.IndexByte(b[i:], '\n')
	if j < 0 {
		return b
	}
	out := append([]byte{}, b[:i]...)
	out = append(out, b[i+j+1:]...)
	if len(out) == 0 {
		return nil
	}
	return out
}

// errReader remembers the error of the reader it wraps.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// cappedBuffer keeps the first max bytes written and counts the rest. It
// may be read while the session still writes to it.
type cappedBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.max - len(b.buf)
	if room >= len(p) {
		b.buf = append(b.buf, p...)
	} else {
		if room > 0 {
			b.buf = append(b.buf, p[:room]...)
		}
		b.dropped += len(p) - max(room, 0)
	}
	return len(p), nil
}

// Bytes is a copy of what was kept.
func (b *cappedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf == nil {
		return nil
	}
	return append([]byte(nil), b.buf...)
}

// Dropped counts the bytes over the limit.
func (b *cappedBuffer) Dropped() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}
