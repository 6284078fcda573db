package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestErrorKindsRoundTrip(t *testing.T) {
	for _, sentinel := range []error{ErrInvalid, ErrNotFound, ErrConflict, ErrUnavailable, ErrInternal} {
		err := fmt.Errorf("set pods: %w: pods is required", sentinel)
		kind, code := KindOf(err)
		back := Error{Kind: kind, Message: "x"}.Err()
		if !errors.Is(back, sentinel) {
			t.Errorf("%v → %s (%d) → %v: lost the sentinel", sentinel, kind, code, back)
		}
		// The agent's own message already names the kind: not twice.
		back = Error{Kind: kind, Message: err.Error()}.Err()
		if !errors.Is(back, sentinel) || back.Error() != err.Error() {
			t.Errorf("%v → %q; want %q, wrapping the sentinel", sentinel, back, err)
		}
	}
	if kind, code := KindOf(errors.New("boom")); kind != KindInternal || code != 500 {
		t.Errorf("unclassified error is %s %d", kind, code)
	}
	if !errors.Is(Error{Kind: "Weird", Message: "x"}.Err(), ErrInternal) {
		t.Errorf("an unknown kind must read as internal")
	}
}

func TestSensitiveNeverPrints(t *testing.T) {
	s := Sensitive(`{"auths":{"r":{"auth":"c2VjcmV0"}}}`)
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("pull", "auth", s, "spec", PodSpec{ImagePullSecrets: []Sensitive{s}})
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %s %+v %#v", s, s, s, s), logged.String()} {
		if strings.Contains(out, "c2VjcmV0") {
			t.Errorf("secret printed: %s", out)
		}
	}
	b, err := json.Marshal(s)
	if err != nil || !strings.Contains(string(b), "eyJ") {
		t.Errorf("the wire must carry the value (base64 in JSON): %s %v", b, err)
	}
}

func TestDesiredPodsDigest(t *testing.T) {
	a := DesiredPods{Generation: 1, Pods: []Pod{{Namespace: "default", Name: "b", UID: "2"}, {Namespace: "default", Name: "a", UID: "1"}}}
	b := DesiredPods{Generation: 7, Pods: []Pod{a.Pods[1], a.Pods[0]}}
	if a.Digest() != b.Digest() {
		t.Error("the digest depends on the generation or the order of pods")
	}
	c := DesiredPods{Generation: 1, Pods: []Pod{a.Pods[0], {Namespace: "default", Name: "a", UID: "1", Hash: "x"}}}
	if a.Digest() == c.Digest() {
		t.Error("the digest does not see a changed pod")
	}
	if (DesiredPods{}).Digest() != (DesiredPods{Pods: []Pod{}}).Digest() {
		t.Error("no pods and an empty list differ")
	}
}
