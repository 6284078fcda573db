package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"berth.dev/berth/nodes/api"
)

// DefaultMaxBodyBytes bounds a request body unless Options say otherwise.
// A desired pod set carries file contents, so it is generous.
const DefaultMaxBodyBytes = 16 << 20

// Options configure the handler. The zero value works.
type Options struct {
	// Logger receives one line per request: method, path (never the query
	// or the body, which may carry secrets), status and duration.
	// Nil discards.
	Logger *slog.Logger
	// Registry is served at /metrics, and the API's own metrics are
	// registered on it. Nil: a private registry with the Go and process
	// collectors.
	Registry *prometheus.Registry
	// MaxBodyBytes bounds a request body; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Version is the agent's version, answered at /v1/version.
	Version string
}

type server struct {
	b            Backend
	log          *slog.Logger
	maxBody      int64
	agentVersion string
	metrics      *metrics
	mux          *http.ServeMux
}

// NewHandler serves b over HTTP: the routes under /v1 and /metrics.
func NewHandler(b Backend, opts Options) http.Handler {
	s := &server{
		b:            b,
		log:          opts.Logger,
		maxBody:      opts.MaxBodyBytes,
		agentVersion: opts.Version,
		mux:          http.NewServeMux(),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	s.metrics = newMetrics(reg, s.log)

	s.mux.HandleFunc("PUT /v1/pods", s.setPods)
	s.mux.HandleFunc("GET /v1/pods", s.pods)
	s.mux.HandleFunc("PUT /v1/network", s.setNetwork)
	s.mux.HandleFunc("GET /v1/network", s.network)
	s.mux.HandleFunc("GET /v1/node", s.node)
	s.mux.HandleFunc("GET /v1/events", s.events)
	s.mux.HandleFunc("GET /v1/pods/{namespace}/{name}/log", s.logs)
	s.mux.HandleFunc("POST /v1/pods/{namespace}/{name}/exec", s.exec)
	s.mux.HandleFunc("POST /v1/images/import", s.importImages)
	s.mux.HandleFunc("GET /v1/version", s.version)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	return s
}

// versionInfo is the answer of GET /v1/version.
type versionInfo struct {
	Version    string `json:"version"`
	APIVersion string `json:"apiVersion"`
}

// setPodsResult is the answer of PUT /v1/pods: the generation accepted.
type setPodsResult struct {
	Generation int64 `json:"generation"`
}

func (s *server) setPods(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	var desired api.DesiredPods
	if err := s.decodeBody(w, r, &desired); err != nil {
		s.writeError(w, r, err)
		return
	}
	if desired.Pods == nil {
		s.writeError(w, r, fmt.Errorf("%w: field \"pods\" is required (an empty list [] stops every pod)", api.ErrInvalid))
		return
	}
	if desired.Generation < 0 {
		s.writeError(w, r, fmt.Errorf("%w: field \"generation\" must not be negative", api.ErrInvalid))
		return
	}
	if err := s.b.SetPods(r.Context(), desired); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, setPodsResult{Generation: desired.Generation})
}

// setNetworkResult is the answer of PUT /v1/network.
type setNetworkResult struct {
	Generation int64  `json:"generation"`
	Digest     string `json:"digest"`
}

func (s *server) setNetwork(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	var n api.Network
	if err := s.decodeBody(w, r, &n); err != nil {
		s.writeError(w, r, err)
		return
	}
	if n.Generation < 0 {
		s.writeError(w, r, fmt.Errorf("%w: field \"generation\" must not be negative", api.ErrInvalid))
		return
	}
	if err := s.b.SetNetwork(r.Context(), n); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, setNetworkResult{Generation: n.Generation, Digest: n.Digest()})
}

func (s *server) network(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	n, err := s.b.Network(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}

func (s *server) pods(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	pods, err := s.b.Pods(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if pods == nil {
		pods = []api.PodStatus{}
	}
	writeJSON(w, http.StatusOK, pods)
}

func (s *server) node(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	info, err := s.b.Node(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *server) version(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, versionInfo{Version: s.agentVersion, APIVersion: api.Version})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only a backend value that cannot be encoded gets here.
		code = http.StatusInternalServerError
		b, _ = json.Marshal(api.Error{Kind: api.KindInternal, Message: "encode answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// writeError answers err as an api.Error with the status of its kind, and
// notes it for the request's log line.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	kind, code := api.KindOf(err)
	s.writeErrorCode(w, r, code, api.Error{Kind: kind, Message: err.Error()})
}

func (s *server) writeErrorCode(w http.ResponseWriter, r *http.Request, code int, e api.Error) {
	if info, ok := r.Context().Value(infoKey{}).(*requestInfo); ok {
		info.err = e.Message
	}
	writeJSON(w, code, e)
}

// ServeHTTP routes the request, then logs it and counts it.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	info := &requestInfo{}
	r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
	defer func() {
		p := recover()
		if p != nil && p != http.ErrAbortHandler {
			s.log.Error("handler panicked", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if !rec.wrote {
				s.writeErrorCode(rec, r, http.StatusInternalServerError, api.Error{Kind: api.KindInternal, Message: "the agent failed to handle the request"})
				p = nil
			}
		}
		s.done(r, rec, info, time.Since(start))
		if p != nil {
			// Cut the connection: the answer is half written.
			panic(http.ErrAbortHandler)
		}
	}()
	if _, pattern := s.mux.Handler(r); pattern == "" {
		s.unmatched(rec, r)
		return
	}
	s.mux.ServeHTTP(rec, r)
}

// unmatched answers a request no route takes: 404 or 405 as JSON, where
// the mux would answer plain text.
func (s *server) unmatched(w http.ResponseWriter, r *http.Request) {
	h, _ := s.mux.Handler(r)
	probe := &codeProbe{header: http.Header{}}
	h.ServeHTTP(probe, r)
	switch probe.code {
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", probe.header.Get("Allow"))
		s.writeErrorCode(w, r, http.StatusMethodNotAllowed, api.Error{Kind: api.KindInvalid,
			Message: fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, probe.header.Get("Allow"))})
	case http.StatusNotFound:
		s.writeErrorCode(w, r, http.StatusNotFound, api.Error{Kind: api.KindNotFound,
			Message: fmt.Sprintf("no such API path: %s %s", r.Method, r.URL.Path)})
	default: // a redirect to the cleaned path
		s.mux.ServeHTTP(w, r)
	}
}

func (s *server) done(r *http.Request, rec *recorder, info *requestInfo, d time.Duration) {
	code := rec.code
	if code == 0 {
		code = http.StatusOK
	}
	route := r.Pattern
	if route == "" {
		route = "unmatched"
	}
	s.metrics.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	s.metrics.duration.WithLabelValues(route).Observe(d.Seconds())

	level := slog.LevelInfo
	switch {
	case code >= 500:
		level = slog.LevelError
	case code >= 400:
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", code),
		slog.Duration("duration", d),
	}
	if info.err != "" {
		attrs = append(attrs, slog.String("error", info.err))
	}
	s.log.LogAttrs(r.Context(), level, "request", attrs...)
}

type infoKey struct{}

// requestInfo carries what a handler tells the request's log line.
type requestInfo struct {
	err string
}

// recorder notes the status a handler answered. Flush and Hijack reach
// the connection through Unwrap (http.ResponseController).
type recorder struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.code, r.wrote = code, code >= 200
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if !r.wrote {
		r.code, r.wrote = http.StatusOK, true
	}
	return r.ResponseWriter.Write(p)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// hijacked records the 101 that the exec handler writes on the raw
// connection.
func (r *recorder) hijacked() { r.code, r.wrote = http.StatusSwitchingProtocols, true }

// codeProbe catches the status of the mux's own 404 and 405 answers.
type codeProbe struct {
	header http.Header
	code   int
}

func (p *codeProbe) Header() http.Header         { return p.header }
func (p *codeProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *codeProbe) WriteHeader(code int)        { p.code = code }

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	execs    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, log *slog.Logger) *metrics {
	return &metrics{
		requests: register(reg, log, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "berth", Subsystem: "agent_api", Name: "requests_total",
			Help: "Agent API requests by route and status code.",
		}, []string{"route", "code"})),
		duration: register(reg, log, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "berth", Subsystem: "agent_api", Name: "request_duration_seconds",
			Help:    "Time to answer an agent API request (streams: until they end).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 60},
		}, []string{"route"})),
		execs: register(reg, log, prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "berth", Subsystem: "agent_api", Name: "exec_sessions",
			Help: "Exec sessions in progress.",
		})),
	}
}

// register registers c, or returns the collector already registered in
// its place (a second handler on the same registry shares the metrics).
func register[C prometheus.Collector](reg prometheus.Registerer, log *slog.Logger, c C) C {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	if err != nil {
		log.Warn("register metric", "error", err)
	}
	return c
}
