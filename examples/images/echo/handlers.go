package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"time"
)

// maxFile bounds what /file reads.
const maxFile = 1 << 20

// maxSleep bounds what /sleep waits.
const maxSleep = 10 * time.Minute

func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.root)
	mux.HandleFunc("GET /healthz", s.probe(s.healthy))
	mux.HandleFunc("POST /healthz/fail", s.flip(func() { s.unhealthy.Store(true) }))
	mux.HandleFunc("POST /healthz/ok", s.flip(func() { s.unhealthy.Store(false) }))
	mux.HandleFunc("GET /readyz", s.probe(s.ready))
	mux.HandleFunc("POST /readyz/fail", s.flip(func() { s.unready.Store(true) }))
	mux.HandleFunc("POST /readyz/ok", s.flip(func() { s.unready.Store(false) }))
	mux.HandleFunc("GET /env", s.env)
	mux.HandleFunc("GET /file", s.file)
	mux.HandleFunc("GET /sleep", s.sleep)
	mux.HandleFunc("POST /exit", s.exitNow)
	mux.HandleFunc("POST /crash", s.crash)
	return s.logRequests(mux)
}

// identity is what GET / answers.
type identity struct {
	Version  string `json:"version"`
	Pod      string `json:"pod"`
	Hostname string `json:"hostname"`
	Remote   string `json:"remote"`
}

func (s *server) root(w http.ResponseWriter, r *http.Request) {
	host, _ := os.Hostname()
	id := identity{Version: s.cfg.version, Pod: s.cfg.pod, Hostname: host, Remote: r.RemoteAddr}
	if wantsJSON(r) {
		writeJSON(w, id)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "version=%s pod=%s\n", id.Version, id.Pod)
}

func wantsJSON(r *http.Request) bool {
	switch r.URL.Query().Get("format") {
	case "json":
		return true
	case "text":
		return false
	}
	return strings.Contains(r.Header.Get("Accept"), "application/json")
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (s *server) probe(ok func() bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "fail\n")
			return
		}
		io.WriteString(w, "ok\n")
	}
}

func (s *server) flip(set func()) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		set()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	}
}

func (s *server) env(w http.ResponseWriter, r *http.Request) {
	env := map[string]string{}
	for _, kv := range s.environ() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	writeJSON(w, env) // encoding/json sorts map keys
}

func (s *server) file(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Query().Get("path")
	if !path.IsAbs(p) || hasDotDot(p) {
		http.Error(w, "path must be absolute, without ..", http.StatusBadRequest)
		return
	}
	under := path.Clean(s.cfg.filesUnder)
	if under != "/" && p != under && !strings.HasPrefix(p, under+"/") {
		http.Error(w, "path is not under "+under, http.StatusForbidden)
		return
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if len(b) > maxFile {
		http.Error(w, fmt.Sprintf("file larger than %d bytes", maxFile), http.StatusRequestEntityTooLarge)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(b)
}

func hasDotDot(p string) bool {
	for _, e := range strings.Split(p, "/") {
		if e == ".." {
			return true
		}
	}
	return false
}

func (s *server) sleep(w http.ResponseWriter, r *http.Request) {
	d, err := time.ParseDuration(r.URL.Query().Get("d"))
	if err != nil || d < 0 || d > maxSleep {
		http.Error(w, fmt.Sprintf("d must be a duration between 0 and %v", maxSleep), http.StatusBadRequest)
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		s.root(w, r)
	case <-r.Context().Done():
	}
}

func (s *server) exitNow(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(r.URL.Query().Get("code"))
	if err != nil || code < 0 || code > 255 {
		http.Error(w, "code must be 0 to 255", http.StatusBadRequest)
		return
	}
	s.answerThenExit(w, exitRequest{code: code}, fmt.Sprintf("exiting %d\n", code))
}

func (s *server) crash(w http.ResponseWriter, r *http.Request) {
	s.answerThenExit(w, exitRequest{code: 2, crash: true}, "crashing\n")
}

// answerThenExit flushes the answer before asking run to end the process, so
// the client sees it. Only the first request wins.
func (s *server) answerThenExit(w http.ResponseWriter, req exitRequest, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Connection", "close")
	io.WriteString(w, msg)
	http.NewResponseController(w).Flush()
	select {
	case s.exit <- req:
	default:
	}
}

// logRequests writes one line per request to the access log.
func (s *server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		s.access.Info("request", "method", r.Method, "path", r.URL.Path, "status", rec.status,
			"bytes", rec.bytes, "duration", time.Since(start), "remote", r.RemoteAddr)
	})
}

type recorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (r *recorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	n, err := r.ResponseWriter.Write(b)
	r.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach Flush.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
