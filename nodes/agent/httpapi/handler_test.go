package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"berth.dev/berth/nodes/api"
)

// fakeBackend records the calls it gets and answers what it is told.
type fakeBackend struct {
	mu      sync.Mutex
	calls   []string
	desired []api.DesiredPods
	network []api.Network
	logOpts []api.LogOptions
	since   []time.Time
	err     error // every call fails with it when set
	logs    string
	archive []byte // the last archive ImportImages read
}

func (f *fakeBackend) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return f.err
}

func (f *fakeBackend) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeBackend) SetPods(_ context.Context, pods api.DesiredPods) error {
	f.mu.Lock()
	f.desired = append(f.desired, pods)
	f.mu.Unlock()
	return f.record("SetPods")
}

func (f *fakeBackend) SetNetwork(_ context.Context, n api.Network) error {
	f.mu.Lock()
	f.network = append(f.network, n)
	f.mu.Unlock()
	return f.record("SetNetwork")
}

func (f *fakeBackend) Network(context.Context) (api.Network, error) {
	if err := f.record("Network"); err != nil {
		return api.Network{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.network) == 0 {
		return api.Network{}, nil
	}
	return f.network[len(f.network)-1], nil
}

func (f *fakeBackend) Pods(context.Context) ([]api.PodStatus, error) {
	if err := f.record("Pods"); err != nil {
		return nil, err
	}
	return []api.PodStatus{{Namespace: "default", Name: "web", Phase: "Running", Ready: true}}, nil
}

func (f *fakeBackend) Node(context.Context) (api.NodeInfo, error) {
	if err := f.record("Node"); err != nil {
		return api.NodeInfo{}, err
	}
	return api.NodeInfo{Name: "lab1", APIVersion: api.Version}, nil
}

func (f *fakeBackend) Events(_ context.Context, since time.Time, _ bool) (<-chan api.Event, error) {
	f.mu.Lock()
	f.since = append(f.since, since)
	f.mu.Unlock()
	if err := f.record("Events"); err != nil {
		return nil, err
	}
	ch := make(chan api.Event, 1)
	ch <- api.Event{Reason: "Started", Pod: "default/web"}
	close(ch)
	return ch, nil
}

func (f *fakeBackend) Logs(_ context.Context, pod string, opts api.LogOptions, w io.Writer) error {
	f.mu.Lock()
	f.logOpts = append(f.logOpts, opts)
	f.mu.Unlock()
	if err := f.record("Logs " + pod); err != nil {
		return err
	}
	_, err := io.WriteString(w, f.logs)
	return err
}

func (f *fakeBackend) Exec(_ context.Context, req api.ExecRequest) (int, error) {
	return 0, f.record("Exec " + req.Pod)
}

func (f *fakeBackend) ImportImages(_ context.Context, r io.Reader) ([]api.Image, error) {
	if err := f.record("ImportImages"); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.archive = b
	f.mu.Unlock()
	return []api.Image{{Ref: "docker.io/berth/echo:2", ID: "sha256:2222"}}, nil
}

type testServer struct {
	b   *fakeBackend
	h   http.Handler
	log *bytes.Buffer
}

func newTestServer(t *testing.T, opts Options) *testServer {
	t.Helper()
	var log bytes.Buffer
	var mu sync.Mutex
	opts.Logger = slog.New(slog.NewJSONHandler(lockedWriter{&mu, &log}, nil))
	b := &fakeBackend{}
	return &testServer{b: b, h: NewHandler(b, opts), log: &log}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (s *testServer) do(method, target, body string, header ...string) *httptest.ResponseRecorder {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, r)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	s.h.ServeHTTP(w, req)
	return w
}

// apiError decodes an error answer, failing the test when it is not one.
func apiError(t *testing.T, w *httptest.ResponseRecorder) api.Error {
	t.Helper()
	var e api.Error
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("error answer has content type %q", ct)
	}
	dec := json.NewDecoder(w.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Kind == "" || e.Message == "" {
		t.Fatalf("not an api.Error (%v): %q", err, w.Body.String())
	}
	return e
}

const validPods = `{"generation":5,"pods":[{"namespace":"default","name":"web","uid":"u1","hash":"h1",
 "spec":{"containers":[{"name":"web","image":"berth/echo:1","resources":{"limits":{"cpu":"500m"}}}],
 "restartPolicy":"Always","imagePullSecrets":["c2VjcmV0LXB1bGwtdG9rZW4="],
 "volumes":[{"name":"cfg","files":{"secret":true,"files":[{"path":"password","content":"aHVudGVyMg=="}]}}]}}]}`

func TestSetPods(t *testing.T) {
	s := newTestServer(t, Options{})
	w := s.do("PUT", "/v1/pods", validPods, "Content-Type", "application/json")
	if w.Code != 200 || strings.TrimSpace(w.Body.String()) != `{"generation":5}` {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	got := s.b.desired[0]
	if got.Generation != 5 || len(got.Pods) != 1 || got.Pods[0].Key() != "default/web" ||
		string(got.Pods[0].Spec.ImagePullSecrets[0]) != "secret-pull-token" ||
		string(got.Pods[0].Spec.Volumes[0].Files.Files[0].Content) != "hunter2" ||
		got.Pods[0].Spec.Containers[0].Resources.Limits.Cpu().MilliValue() != 500 {
		t.Errorf("backend got %+v", got)
	}
	// An empty set is explicit.
	if w := s.do("PUT", "/v1/pods", `{"generation":6,"pods":[]}`); w.Code != 200 {
		t.Errorf("empty set: %d %s", w.Code, w.Body)
	}
}

// A malformed request is refused with a message saying what is wrong, and
// the backend never hears of it.
func TestSetPodsStrictDecoding(t *testing.T) {
	for _, tc := range []struct {
		name, body, contentType, want string
	}{
		{"empty body", "", "", "empty request body"},
		{"null", "null", "", `"pods" is required`},
		{"no pods", `{"generation":1}`, "", `"pods" is required`},
		{"null pods", `{"generation":1,"pods":null}`, "", `"pods" is required`},
		{"negative generation", `{"generation":-1,"pods":[]}`, "", `"generation" must not be negative`},
		{"unknown field", `{"generation":1,"pods":[],"force":true}`, "", `unknown field "force"`},
		{"unknown nested field", `{"generation":1,"pods":[{"name":"a","spec":{"containers":[],"nodeName":"x"}}]}`, "", `unknown field "nodeName"`},
		{"wrong type", `{"generation":"1","pods":[]}`, "", `field "generation": expected int64, found a JSON string`},
		{"wrong nested type", `{"generation":1,"pods":[{"name":7}]}`, "", `field "pods.name": expected string`},
		{"trailing document", `{"generation":1,"pods":[]} {"generation":2,"pods":[]}`, "", "data after the JSON document"},
		{"trailing garbage", `{"generation":1,"pods":[]}]`, "", "data after the JSON document"},
		{"truncated", `{"generation":1,"pods":[`, "", "truncated JSON"},
		{"malformed", `{"generation":1,,}`, "", "malformed JSON at byte"},
		{"bad quantity", `{"generation":1,"pods":[{"spec":{"containers":[{"name":"c","resources":{"limits":{"cpu":"lots"}}}]}}]}`, "", "quantities must match"},
		{"bad base64", `{"generation":1,"pods":[{"spec":{"containers":[],"imagePullSecrets":["%%%"]}}]}`, "", "base64"},
		{"not json", `generation=1`, "application/x-www-form-urlencoded", "must be application/json"},
		{"too large", `{"generation":1,"pods":[` + strings.Repeat(`{"name":"a"},`, 100) + `{}]}`, "", "larger than 1024 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, Options{MaxBodyBytes: 1024})
			w := s.do("PUT", "/v1/pods", tc.body, "Content-Type", tc.contentType)
			if w.Code != 400 {
				t.Fatalf("status %d, want 400: %s", w.Code, w.Body)
			}
			if e := apiError(t, w); e.Kind != api.KindInvalid || !strings.Contains(e.Message, tc.want) {
				t.Errorf("got %s %q, want Invalid mentioning %q", e.Kind, e.Message, tc.want)
			}
			if calls := s.b.Calls(); len(calls) != 0 {
				t.Errorf("the backend was called: %v", calls)
			}
		})
	}
}

func TestQueryValidation(t *testing.T) {
	for _, tc := range []struct {
		method, target, want string
	}{
		{"GET", "/v1/pods?all=true", `unknown query parameter "all"`},
		{"PUT", "/v1/pods?dryRun=1", `unknown query parameter "dryRun"`},
		{"GET", "/v1/node?x=1", `unknown query parameter "x"`},
		{"GET", "/v1/events?since=yesterday", `"since": "yesterday" is not an RFC 3339 time`},
		{"GET", "/v1/events?follow=maybe", `"follow": "maybe" is not a boolean`},
		{"GET", "/v1/events?follow=true&follow=false", `"follow": given 2 times`},
		{"GET", "/v1/events?since=%zz", "malformed query"},
		{"GET", "/v1/pods/default/web/log?tailLines=-1", `"tailLines": "-1" is not a non-negative integer`},
		{"GET", "/v1/pods/default/web/log?tailLines=ten", `"tailLines": "ten"`},
		{"GET", "/v1/pods/default/web/log?sinceSeconds=0", `"sinceSeconds" must be positive`},
		{"GET", "/v1/pods/default/web/log?sinceSeconds=10&sinceTime=2024-01-01T00:00:00Z", "exclude each other"},
		{"GET", "/v1/pods/default/web/log?previous=1&tail=3", `unknown query parameter "tail"`},
		{"POST", "/v1/pods/default/web/exec?command=sh&tty=yes", `"tty": "yes" is not a boolean`},
		{"POST", "/v1/pods/default/web/exec", `"command" is required`},
		{"POST", "/v1/pods/default/web/exec?command=sh", `needs "Connection: Upgrade"`},
	} {
		t.Run(tc.target, func(t *testing.T) {
			s := newTestServer(t, Options{})
			w := s.do(tc.method, tc.target, "")
			if w.Code != 400 {
				t.Fatalf("status %d, want 400: %s", w.Code, w.Body)
			}
			if e := apiError(t, w); e.Kind != api.KindInvalid || !strings.Contains(e.Message, tc.want) {
				t.Errorf("got %s %q, want Invalid mentioning %q", e.Kind, e.Message, tc.want)
			}
			if calls := s.b.Calls(); len(calls) != 0 {
				t.Errorf("the backend was called: %v", calls)
			}
		})
	}
}

// Every backend error reaches the wire as its kind, with its status.
func TestErrorKinds(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
		kind api.ErrorKind
	}{
		{fmt.Errorf("pod default/x: %w", api.ErrNotFound), 404, api.KindNotFound},
		{fmt.Errorf("generation 3 < 4: %w", api.ErrConflict), 409, api.KindConflict},
		{fmt.Errorf("containerd: %w", api.ErrUnavailable), 503, api.KindUnavailable},
		{fmt.Errorf("pod name: %w", api.ErrInvalid), 400, api.KindInvalid},
		{errors.New("disk on fire"), 500, api.KindInternal},
	} {
		for _, route := range []struct{ method, target, body string }{
			{"PUT", "/v1/pods", `{"generation":1,"pods":[]}`},
			{"GET", "/v1/pods", ""},
			{"GET", "/v1/node", ""},
			{"GET", "/v1/events", ""},
			{"GET", "/v1/pods/default/x/log", ""},
			{"POST", "/v1/images/import", "archive"},
		} {
			s := newTestServer(t, Options{})
			s.b.err = tc.err
			w := s.do(route.method, route.target, route.body)
			if w.Code != tc.code {
				t.Errorf("%s %s with %v: status %d, want %d", route.method, route.target, tc.err, w.Code, tc.code)
				continue
			}
			if e := apiError(t, w); e.Kind != tc.kind || e.Message != tc.err.Error() {
				t.Errorf("%s %s: %+v", route.method, route.target, e)
			}
		}
	}
}

func TestUnknownRoutesAnswerJSON(t *testing.T) {
	s := newTestServer(t, Options{})
	w := s.do("GET", "/v1/nothing", "")
	if e := apiError(t, w); w.Code != 404 || e.Kind != api.KindNotFound {
		t.Errorf("unknown path: %d %+v", w.Code, e)
	}
	w = s.do("DELETE", "/v1/pods", "")
	if e := apiError(t, w); w.Code != 405 || e.Kind != api.KindInvalid || !strings.Contains(w.Header().Get("Allow"), "PUT") {
		t.Errorf("wrong method: %d %+v, Allow %q", w.Code, e, w.Header().Get("Allow"))
	}
}

func TestReads(t *testing.T) {
	s := newTestServer(t, Options{Version: "1.2.3"})
	for target, want := range map[string]string{
		"/v1/pods":    `"name":"web"`,
		"/v1/node":    `"name":"lab1"`,
		"/v1/version": `{"version":"1.2.3","apiVersion":"v1"}`,
		"/v1/events":  `"reason":"Started"`,
	} {
		w := s.do("GET", target, "")
		if w.Code != 200 || !strings.Contains(w.Body.String(), want) {
			t.Errorf("GET %s: %d %s", target, w.Code, w.Body)
		}
	}
	w := s.do("GET", "/v1/events?since=2024-05-01T10:00:00.5Z&follow=false", "")
	if w.Header().Get("Content-Type") != "application/x-ndjson" || !s.b.since[1].Equal(time.Date(2024, 5, 1, 10, 0, 0, 5e8, time.UTC)) {
		t.Errorf("events: %s, since %v", w.Header().Get("Content-Type"), s.b.since)
	}
}

func TestLogQuery(t *testing.T) {
	s := newTestServer(t, Options{})
	s.b.logs = "line 1\nline 2\n"
	w := s.do("GET", "/v1/pods/kube-system/dns-1/log?container=dns&previous=true&timestamps=1&tailLines=10&sinceTime=2024-05-01T10:00:00Z", "")
	if w.Code != 200 || w.Body.String() != s.b.logs || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		t.Fatalf("%d %q %s", w.Code, w.Body, w.Header())
	}
	want := api.LogOptions{Container: "dns", Previous: true, Timestamps: true, TailLines: 10, Since: time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)}
	if calls := s.b.Calls(); calls[0] != "Logs kube-system/dns-1" || !s.b.logOpts[0].Since.Equal(want.Since) {
		t.Errorf("calls %v, opts %+v", calls, s.b.logOpts[0])
	}
	got := s.b.logOpts[0]
	got.Since = want.Since
	if got != want {
		t.Errorf("opts %+v, want %+v", got, want)
	}

	before := time.Now()
	s.do("GET", "/v1/pods/default/web/log?sinceSeconds=60", "")
	if since := s.b.logOpts[1].Since; since.Before(before.Add(-61*time.Second)) || since.After(time.Now().Add(-59*time.Second)) {
		t.Errorf("sinceSeconds=60 gave since %v at %v", since, before)
	}
}

// One line per request, with what an operator needs, and never a body or
// a query (pull secrets, secret files, exec commands).
func TestRequestLogNeverCarriesSecrets(t *testing.T) {
	s := newTestServer(t, Options{})
	s.do("PUT", "/v1/pods", validPods)
	s.do("PUT", "/v1/pods", `{"generation":1,"pods":[],"password":"hunter2"}`)
	s.do("POST", "/v1/pods/default/web/exec?command=mysql&command=-phunter2", "")
	s.do("GET", "/v1/pods", "")

	lines := strings.Split(strings.TrimSpace(s.log.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("want one line per request, got:\n%s", s.log)
	}
	for _, secret := range []string{"hunter2", "aHVudGVyMg", "secret-pull-token", "c2VjcmV0LXB1bGwtdG9rZW4"} {
		if strings.Contains(s.log.String(), secret) {
			t.Errorf("log carries %q:\n%s", secret, s.log)
		}
	}
	var first struct {
		Msg, Method, Path, Level string
		Status                   int
		Duration                 float64
	}
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil || first.Msg != "request" || first.Method != "PUT" ||
		first.Path != "/v1/pods" || first.Status != 200 || first.Duration <= 0 || first.Level != "INFO" {
		t.Errorf("log line %s (%v)", lines[0], err)
	}
	if !strings.Contains(lines[1], `"level":"WARN"`) || !strings.Contains(lines[1], `"status":400`) ||
		!strings.Contains(lines[1], `unknown field \"password\"`) {
		t.Errorf("a refused request says why: %s", lines[1])
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := newTestServer(t, Options{Registry: reg})
	s.do("GET", "/v1/pods", "")
	s.do("GET", "/v1/pods", "")
	// A second handler on the same registry shares the metrics.
	NewHandler(&fakeBackend{}, Options{Registry: reg})
	w := s.do("GET", "/metrics", "")
	if w.Code != 200 || !strings.Contains(w.Body.String(), `berth_agent_api_requests_total{code="200",route="GET /v1/pods"} 2`) {
		t.Errorf("%d\n%s", w.Code, w.Body)
	}
	// Without a registry: a private one, with the process's figures.
	w = newTestServer(t, Options{}).do("GET", "/metrics", "")
	if w.Code != 200 || !strings.Contains(w.Body.String(), "go_goroutines") {
		t.Errorf("%d\n%s", w.Code, w.Body)
	}
}

type panicBackend struct{ fakeBackend }

func (*panicBackend) Node(context.Context) (api.NodeInfo, error) { panic("bug") }

func TestPanicIsInternalError(t *testing.T) {
	var log bytes.Buffer
	h := NewHandler(&panicBackend{}, Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/v1/node", nil))
	if e := apiError(t, w); w.Code != 500 || e.Kind != api.KindInternal {
		t.Errorf("%d %+v", w.Code, e)
	}
	if !strings.Contains(log.String(), "handler panicked") {
		t.Errorf("log:\n%s", log.String())
	}
}
