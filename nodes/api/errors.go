package api

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors, one per ErrorKind. The agent wraps them; the server
// maps them to a kind and status; the client maps the kind back, so that
// callers on both sides check errors.Is(err, api.ErrNotFound).
var (
	ErrInvalid     = errors.New("invalid request")
	ErrNotFound    = errors.New("not found")
	ErrConflict    = errors.New("conflict")
	ErrUnavailable = errors.New("unavailable")
	ErrInternal    = errors.New("internal error")
)

var kinds = []struct {
	kind ErrorKind
	err  error
	code int
}{
	{KindInvalid, ErrInvalid, 400},
	{KindNotFound, ErrNotFound, 404},
	{KindConflict, ErrConflict, 409},
	{KindUnavailable, ErrUnavailable, 503},
	{KindInternal, ErrInternal, 500},
}

// KindOf classifies err; unclassified errors are Internal.
func KindOf(err error) (ErrorKind, int) {
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return k.kind, k.code
		}
	}
	return KindInternal, 500
}

// Err turns a wire error back into an error wrapping its sentinel. A
// message that already says what the sentinel says (the agent's errors
// wrap it) is kept as it is, so that the kind is not said twice.
func (e Error) Err() error {
	sentinel := ErrInternal
	for _, k := range kinds {
		if k.kind == e.Kind {
			sentinel = k.err
		}
	}
	if strings.Contains(e.Message, sentinel.Error()) {
		return &wireError{sentinel: sentinel, msg: e.Message}
	}
	return fmt.Errorf("%w: %s", sentinel, e.Message)
}

// wireError is a message from the agent that names its kind already.
type wireError struct {
	sentinel error
	msg      string
}

func (w *wireError) Error() string { return w.msg }
func (w *wireError) Unwrap() error { return w.sentinel }
