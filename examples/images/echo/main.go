// Command echo is berth's test workload: a small, static HTTP server whose
// every behaviour a test needs to observe or provoke is one request away.
//
//	GET  /                 version and pod name ("version=1 pod=web-0"; JSON
//	                       with ?format=json or Accept: application/json)
//	GET  /healthz          200 ok or 503 (liveness)
//	POST /healthz/fail|ok  flip liveness
//	GET  /readyz           200 ok or 503 (readiness: after --ready-after,
//	                       unless flipped, and never while terminating)
//	POST /readyz/fail|ok   flip readiness
//	GET  /env              the process environment as a sorted JSON object
//	GET  /file?path=/p     the content of a (mounted) file
//	GET  /sleep?d=2s       answers as / after a delay (in-flight requests)
//	POST /exit?code=N      answers, then exits with code N
//	POST /crash            answers, then dies with a goroutine dump, exit 2
//
// With --grpc-health-port it also serves grpc.health.v1.Health/Check over
// cleartext HTTP/2 (service "readiness" reports readiness, any other service
// liveness), so gRPC probes have something real to talk to.
//
// On SIGTERM (or SIGINT) readiness turns 503 at once while the server keeps
// serving for --drain, as a pod being removed from its Services must; then it
// stops accepting, waits for requests in flight and exits 0.
//
// One line per request goes to stdout, lifecycle lines to stderr. The version
// is set at build time (-ldflags "-X main.version=1") and overridden by
// $ECHO_VERSION; the pod name is $POD_NAME, else the hostname.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// version is what GET / answers; set with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	os.Exit(run(os.Args[1:], os.Getenv, os.Environ, sigs, os.Stdout, os.Stderr))
}

// config is what flags and environment decide.
type config struct {
	listen     string
	grpcPort   int
	readyAfter time.Duration
	drain      time.Duration
	filesUnder string
	version    string
	pod        string
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	fs.SetOutput(stderr)

	listen := ":8080"
	if p := getenv("PORT"); p != "" {
		listen = ":" + p
	}
	if l := getenv("ECHO_LISTEN"); l != "" {
		listen = l
	}
	var c config
	fs.StringVar(&c.listen, "listen", listen, "address to serve HTTP on (env ECHO_LISTEN, or :$PORT)")
	grpcPort, err := envInt(getenv, "ECHO_GRPC_HEALTH_PORT")
	if err != nil {
		return c, err
	}
	fs.IntVar(&c.grpcPort, "grpc-health-port", grpcPort, "serve grpc.health.v1 on this port of the --listen host; 0 for none (env ECHO_GRPC_HEALTH_PORT)")
	readyAfter, err := envDuration(getenv, "ECHO_READY_AFTER")
	if err != nil {
		return c, err
	}
	fs.DurationVar(&c.readyAfter, "ready-after", readyAfter, "report not ready until this long after start (env ECHO_READY_AFTER)")
	drain, err := envDuration(getenv, "ECHO_DRAIN")
	if err != nil {
		return c, err
	}
	fs.DurationVar(&c.drain, "drain", drain, "on SIGTERM, keep serving (not ready) this long before stopping (env ECHO_DRAIN)")
	filesUnder := "/"
	if f := getenv("ECHO_FILES_UNDER"); f != "" {
		filesUnder = f
	}
	fs.StringVar(&c.filesUnder, "files-under", filesUnder, "/file serves only paths under this directory (env ECHO_FILES_UNDER)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.grpcPort < 0 || c.grpcPort > 65535 {
		return c, fmt.Errorf("--grpc-health-port %d out of range", c.grpcPort)
	}
	if !strings.HasPrefix(c.filesUnder, "/") {
		return c, fmt.Errorf("--files-under %q is not an absolute path", c.filesUnder)
	}

	c.version = version
	if v := getenv("ECHO_VERSION"); v != "" {
		c.version = v
	}
	c.pod = getenv("POD_NAME")
	if c.pod == "" {
		c.pod, _ = os.Hostname()
	}
	return c, nil
}

func envDuration(getenv func(string) string, key string) (time.Duration, error) {
	v := getenv(key)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("$%s: %w", key, err)
	}
	return d, nil
}

func envInt(getenv func(string) string, key string) (int, error) {
	v := getenv(key)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("$%s: %w", key, err)
	}
	return n, nil
}

// run serves until a signal arrives on sigs or a request asks to exit, and
// returns the process's exit code.
func run(args []string, getenv func(string) string, environ func() []string, sigs <-chan os.Signal, stdout, stderr io.Writer) int {
	life := slog.New(slog.NewTextHandler(stderr, nil))
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		life.Error("bad configuration", "err", err)
		return 64
	}
	s := newServer(cfg, environ, slog.New(slog.NewTextHandler(stdout, nil)))

	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		life.Error("listen", "err", err)
		return 1
	}
	srv := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	life.Info("serving", "version", cfg.version, "pod", cfg.pod, "addr", ln.Addr().String(), "ready_after", cfg.readyAfter, "drain", cfg.drain)

	var grpcSrv *http.Server
	if cfg.grpcPort != 0 {
		host, _, err := net.SplitHostPort(cfg.listen)
		if err != nil {
			life.Error("grpc health listen", "err", err)
			return 1
		}
		gln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(cfg.grpcPort)))
		if err != nil {
			life.Error("grpc health listen", "err", err)
			return 1
		}
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		grpcSrv = &http.Server{Handler: http.HandlerFunc(s.grpcHealth), Protocols: &p, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- grpcSrv.Serve(gln) }()
		life.Info("serving grpc health", "addr", gln.Addr().String())
	}
	if cfg.readyAfter > 0 {
		t := time.AfterFunc(cfg.readyAfter, func() { life.Info("ready") })
		defer t.Stop()
	}

	stop := func(ctx context.Context) {
		if grpcSrv != nil {
			grpcSrv.Shutdown(ctx)
		}
		srv.Shutdown(ctx)
	}
	select {
	case err := <-errc:
		life.Error("serve", "err", err)
		return 1
	case sig := <-sigs:
		s.terminating.Store(true)
		life.Info("terminating", "signal", sig.String(), "drain", cfg.drain)
		time.Sleep(cfg.drain)
		life.Info("stopping")
		stop(context.Background())
		life.Info("stopped", "code", 0)
		return 0
	case req := <-s.exit:
		if req.crash {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			fmt.Fprintf(stderr, "panic: crash requested\n\n%s", buf)
			return 2
		}
		// Let the handler that asked finish its answer, briefly.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		stop(ctx)
		life.Info("exit requested", "code", req.code)
		return req.code
	}
}

type exitRequest struct {
	code  int
	crash bool
}

// server holds the state that requests read and flip.
type server struct {
	cfg     config
	started time.Time
	now     func() time.Time
	environ func() []string
	access  *slog.Logger
	exit    chan exitRequest

	unhealthy   atomic.Bool
	unready     atomic.Bool
	terminating atomic.Bool
}

func newServer(cfg config, environ func() []string, access *slog.Logger) *server {
	return &server{
		cfg:     cfg,
		started: time.Now(),
		now:     time.Now,
		environ: environ,
		access:  access,
		exit:    make(chan exitRequest, 1),
	}
}

func (s *server) healthy() bool { return !s.unhealthy.Load() }

func (s *server) ready() bool {
	return !s.unready.Load() && !s.terminating.Load() && s.now().Sub(s.started) >= s.cfg.readyAfter
}
