package watch

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func TestWebhook(t *testing.T) {
	gh, gl, gt := Secret("github-secret"), Secret("gitlab-token"), Secret("gitea-secret")
	var logs bytes.Buffer
	var nudges atomic.Int32
	h, err := Webhook(func() { nudges.Add(1) }, WebhookOptions{
		GitHubSecret: gh, GitLabToken: gl, GiteaSecret: gt, MaxBody: 1024,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	body := []byte(`{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"}`)
	big := bytes.Repeat([]byte("x"), 1025)
	for _, tc := range []struct {
		name   string
		method string
		body   []byte
		header map[string]string
		code   int
		nudge  bool
	}{
		{"github", "POST", body, map[string]string{"X-Hub-Signature-256": "sha256=" + sign(gh, body), "X-GitHub-Event": "push"}, 202, true},
		{"github ping", "POST", body, map[string]string{"X-Hub-Signature-256": "sha256=" + sign(gh, body), "X-GitHub-Event": "ping"}, 200, false},
		{"github wrong secret", "POST", body, map[string]string{"X-Hub-Signature-256": "sha256=" + sign([]byte("nope"), body)}, 401, false},
		{"github no prefix", "POST", body, map[string]string{"X-Hub-Signature-256": sign(gh, body)}, 401, false},
		{"github body changed", "POST", append(body, ' '), map[string]string{"X-Hub-Signature-256": "sha256=" + sign(gh, body)}, 401, false},
		{"github not hex", "POST", body, map[string]string{"X-Hub-Signature-256": "sha256=zz"}, 401, false},
		{"gitlab", "POST", body, map[string]string{"X-Gitlab-Token": "gitlab-token", "X-Gitlab-Event": "Push Hook"}, 202, true},
		{"gitlab wrong token", "POST", body, map[string]string{"X-Gitlab-Token": "gitlab-tokem"}, 401, false},
		{"gitlab token prefix", "POST", body, map[string]string{"X-Gitlab-Token": "gitlab"}, 401, false},
		{"gitea", "POST", body, map[string]string{"X-Gitea-Signature": sign(gt, body), "X-Gitea-Event": "push"}, 202, true},
		{"gitea wrong secret", "POST", body, map[string]string{"X-Gitea-Signature": sign(gh, body)}, 401, false},
		{"gitea with github header", "POST", body, map[string]string{"X-Gitea-Signature": "00", "X-Hub-Signature-256": "sha256=" + sign(gh, body)}, 202, true},
		{"unsigned", "POST", body, nil, 401, false},
		{"oversize", "POST", big, map[string]string{"X-Hub-Signature-256": "sha256=" + sign(gh, big)}, 413, false},
		{"get", "GET", nil, nil, 405, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := nudges.Load()
			req, err := http.NewRequest(tc.method, srv.URL+"/hook", bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			text, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, text, tc.code)
			}
			if tc.code == 401 && strings.TrimSpace(string(text)) != "signature mismatch" {
				t.Errorf("401 body %q says more than \"signature mismatch\"", text)
			}
			if tc.code == 405 && resp.Header.Get("Allow") != "POST" {
				t.Errorf("405 without Allow: POST")
			}
			if got := nudges.Load() - before; got != map[bool]int32{true: 1}[tc.nudge] {
				t.Errorf("%d nudges, want nudge=%v", got, tc.nudge)
			}
		})
	}
	for _, s := range []string{"github-secret", "gitlab-token", "gitea-secret"} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("log holds a secret:\n%s", logs.String())
		}
	}
}

func TestWebhookOnlyConfiguredForges(t *testing.T) {
	var nudges atomic.Int32
	h, err := Webhook(func() { nudges.Add(1) }, WebhookOptions{GitHubSecret: Secret("s")})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("{}")
	for _, hdr := range []map[string]string{
		{"X-Gitlab-Token": ""},
		{"X-Gitea-Signature": sign(nil, body)},
		{"X-Gitea-Signature": sign([]byte(""), body)},
	} {
		req := httptest.NewRequest("POST", "/", bytes.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 401 {
			t.Errorf("%v: status %d, want 401", hdr, rec.Code)
		}
	}
	if nudges.Load() != 0 {
		t.Error("an unconfigured forge nudged")
	}
	if _, err := Webhook(func() {}, WebhookOptions{}); err == nil {
		t.Error("a webhook without any secret was accepted")
	}
	if got := fmt.Sprintf("%v %s %+v", Secret("s3cret"), Secret("s3cret"), WebhookOptions{GitHubSecret: Secret("s3cret")}); strings.Contains(got, "s3cret") {
		t.Errorf("secret printed: %s", got)
	}
}

// The whole path: a signed GitHub delivery to the handler makes the
// watcher of a remote repository look at once.
func TestWebhookNudgesWatcher(t *testing.T) {
	h := strings.Repeat("d", 40)
	w := start(t, Options{Branch: "main", Since: "", Interval: time.Hour, Resolve: func(context.Context) (string, error) {
		return h, nil
	}})
	expect(t, w, "main", h, SourcePoll) // the look at start
	hook, err := Webhook(w.Nudge, WebhookOptions{GitHubSecret: Secret("k")})
	if err != nil {
		t.Fatal(err)
	}
	h = strings.Repeat("e", 40) // written before the nudge, read by Run after it
	body := []byte(`{"after":"` + strings.Repeat("f", 40) + `"}`)
	req := httptest.NewRequest("POST", "/", bytes.NewReader(body))
	req.Header.Set("X-Hub-Signature-256", "sha256="+sign([]byte("k"), body))
	rec := httptest.NewRecorder()
	hook.ServeHTTP(rec, req)
	if rec.Code != 202 {
		t.Fatalf("status %d", rec.Code)
	}
	// The event carries what the resolver read, not the payload's commit.
	expect(t, w, "main", strings.Repeat("e", 40), SourceWebhook)
}
