package httpapi

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"berth.dev/berth/nodes/api"
)

func TestImportImages(t *testing.T) {
	// The archive is not bounded by MaxBodyBytes, which is for JSON.
	s := newTestServer(t, Options{MaxBodyBytes: 16})
	archive := strings.Repeat("tar data ", 1000)
	for _, ct := range []string{"application/x-tar", "application/octet-stream", ""} {
		w := s.do("POST", "/v1/images/import", archive, "Content-Type", ct)
		if w.Code != 200 || strings.TrimSpace(w.Body.String()) != `{"images":[{"ref":"docker.io/berth/echo:2","id":"sha256:2222"}]}` {
			t.Errorf("content type %q: %d %s", ct, w.Code, w.Body)
		}
		if w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("answer content type %q", w.Header().Get("Content-Type"))
		}
		s.b.mu.Lock()
		got := s.b.archive
		s.b.archive = nil
		s.b.mu.Unlock()
		if !bytes.Equal(got, []byte(archive)) {
			t.Errorf("content type %q: the backend read %d bytes, want the %d sent", ct, len(got), len(archive))
		}
	}
	if calls := s.b.Calls(); len(calls) != 3 {
		t.Errorf("calls %v", calls)
	}
}

func TestImportImagesRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, method, target, ct string
		code                     int
		want                     string
	}{
		{"json", "POST", "/v1/images/import", "application/json", 400, `content type "application/json": the body must be an image archive`},
		{"bad content type", "POST", "/v1/images/import", "tar;;", 400, "the body must be an image archive"},
		{"query", "POST", "/v1/images/import?ref=x", "application/x-tar", 400, `"ref"`},
		{"method", "PUT", "/v1/images/import", "application/x-tar", 405, "allowed: POST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, Options{})
			w := s.do(tc.method, tc.target, "archive", "Content-Type", tc.ct)
			e := apiError(t, w)
			if w.Code != tc.code || e.Kind != api.KindInvalid || !strings.Contains(e.Message, tc.want) {
				t.Errorf("%d %+v; want %d Invalid saying %q", w.Code, e, tc.code, tc.want)
			}
			if slices.Contains(s.b.Calls(), "ImportImages") {
				t.Error("the backend was called")
			}
		})
	}
}
