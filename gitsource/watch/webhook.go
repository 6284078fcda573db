package watch

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
)

// DefaultMaxWebhookBody caps a webhook delivery's body; forges' push
// payloads are well below it.
const DefaultMaxWebhookBody = 1 << 20

// Secret is a webhook secret or token. It prints and logs as [redacted].
type Secret []byte

func (Secret) String() string               { return "[redacted]" }
func (Secret) GoString() string             { return "[redacted]" }
func (Secret) LogValue() slog.Value         { return slog.StringValue("[redacted]") }
func (Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// WebhookOptions hold the secret of each forge allowed to nudge the
// watcher. A forge without a secret is refused.
type WebhookOptions struct {
	// GitHubSecret verifies X-Hub-Signature-256: "sha256=" and the hex
	// HMAC-SHA256 of the body.
	GitHubSecret Secret
	// GitLabToken is compared with X-Gitlab-Token (GitLab sends the
	// token itself, unsigned: use TLS).
	GitLabToken Secret
	// GiteaSecret verifies X-Gitea-Signature: the hex HMAC-SHA256 of the
	// body.
	GiteaSecret Secret
	// MaxBody caps the body read; a larger one is refused with 413.
	// 0 is DefaultMaxWebhookBody.
	MaxBody int64
	// Logger receives a line per refused delivery; nil discards them.
	Logger *slog.Logger
}

// Validate checks that some forge can be verified.
func (o WebhookOptions) Validate() error {
	if len(o.GitHubSecret) == 0 && len(o.GitLabToken) == 0 && len(o.GiteaSecret) == 0 {
		return errors.New("webhook options: no secret or token given; refusing to accept unsigned deliveries")
	}
	if o.MaxBody < 0 {
		return errors.New("webhook options: negative body limit")
	}
	return nil
}

// Webhook returns the handler the caller mounts on its webhook listener
// (only POST is accepted). A delivery whose signature verifies calls nudge
// — Watcher.Nudge — and gets 202; nothing in the payload is used, so a
// forged or replayed delivery can at worst cause a fetch. A GitHub ping is
// answered without a nudge. Refusals: 405 for another method, 413 for a
// body over MaxBody, 401 "signature mismatch" for anything unverified.
func Webhook(nudge func(), opts WebhookOptions) (http.Handler, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if nudge == nil {
		return nil, errors.New("webhook: nudge function is nil")
	}
	if opts.MaxBody == 0 {
		opts.MaxBody = DefaultMaxWebhookBody
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &webhook{opts: opts, nudge: nudge, log: log.With("component", "webhook")}, nil
}

type webhook struct {
	opts  WebhookOptions
	nudge func()
	log   *slog.Logger
}

func (h *webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.log.Warn("webhook refused: body too large", "remote", r.RemoteAddr, "limit", h.opts.MaxBody)
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	forge := h.verify(r.Header, body)
	if forge == "" {
		h.log.Warn("webhook refused: signature mismatch", "remote", r.RemoteAddr)
		http.Error(w, "signature mismatch", http.StatusUnauthorized)
		return
	}
	if forge == "github" && r.Header.Get("X-GitHub-Event") == "ping" {
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "pong\n")
		return
	}
	h.nudge()
	w.WriteHeader(http.StatusAccepted)
	io.WriteString(w, "fetching\n")
}

// verify returns the forge whose signature header verifies body, "" if
// none does. Every forge whose header is present and secret configured is
// tried (Gitea also sends GitHub's header).
func (h *webhook) verify(hdr http.Header, body []byte) string {
	if sig := hdr.Get("X-Gitea-Signature"); sig != "" && len(h.opts.GiteaSecret) > 0 {
		if hmacHexEqual(h.opts.GiteaSecret, body, sig) {
			return "gitea"
		}
	}
	if sig := hdr.Get("X-Hub-Signature-256"); sig != "" && len(h.opts.GitHubSecret) > 0 {
		if hexSig, ok := strings.CutPrefix(sig, "sha256="); ok && hmacHexEqual(h.opts.GitHubSecret, body, hexSig) {
			return "github"
		}
	}
	if tok := hdr.Get("X-Gitlab-Token"); tok != "" && len(h.opts.GitLabToken) > 0 {
		// Compare digests, so that neither content nor length leaks
		// through timing.
		a, b := sha256.Sum256([]byte(tok)), sha256.Sum256(h.opts.GitLabToken)
		if subtle.ConstantTimeCompare(a[:], b[:]) == 1 {
			return "gitlab"
		}
	}
	return ""
}

func hmacHexEqual(secret, body []byte, hexSig string) bool {
	got, err := hex.DecodeString(strings.TrimSpace(hexSig))
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}
