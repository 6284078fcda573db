package api

import (
	"io"
	"time"
)

// LogOptions select what a log request returns, as kubectl logs does.
type LogOptions struct {
	Container  string    `json:"container,omitempty"` // default: the only app container
	Follow     bool      `json:"follow,omitempty"`
	Previous   bool      `json:"previous,omitempty"` // the previous instance's log
	TailLines  int       `json:"tailLines,omitempty"`
	Since      time.Time `json:"since,omitzero"`
	Timestamps bool      `json:"timestamps,omitempty"`
}

// TermSize is a terminal's size, for exec with a TTY.
type TermSize struct {
	Width, Height uint16
}

// ExecRequest runs a command in a running container. With TTY, Stderr is
// unused (a terminal merges the streams) and Resize may carry size changes.
type ExecRequest struct {
	Pod       string   // namespace/name
	Container string   // default: the only app container
	Command   []string // required
	TTY       bool
	Stdin     io.Reader // nil: no stdin
	Stdout    io.Writer
	Stderr    io.Writer
	Resize    <-chan TermSize
	// Timeout bounds the command (probes); zero is none.
	Timeout time.Duration
}
