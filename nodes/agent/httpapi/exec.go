package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"berth.dev/berth/nodes/agent/httpapi/frame"
	"berth.dev/berth/nodes/api"
)

// exitDrain is how long the server waits, after the exit frame, for the
// client to close its side before it closes the connection itself.
const exitDrain = 5 * time.Second

// errProtocol ends a session whose client broke the frame protocol.
var errProtocol = errors.New("exec protocol error")

func (s *server) exec(w http.ResponseWriter, r *http.Request) {
	q, err := newQuery(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	req := api.ExecRequest{
		Pod:       r.PathValue("namespace") + "/" + r.PathValue("name"),
		Container: q.str("container"),
		Command:   q.list("command"),
		TTY:       q.bool("tty"),
	}
	stdin := q.bool("stdin")
	if err := q.finish(); err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(req.Command) == 0 {
		s.writeError(w, r, fmt.Errorf("%w: query parameter \"command\" is required (once per argument)", api.ErrInvalid))
		return
	}
	if !headerHas(r.Header, "Connection", "upgrade") || !headerHas(r.Header, "Upgrade", frame.Protocol) {
		s.writeError(w, r, fmt.Errorf("%w: exec needs \"Connection: Upgrade\" and \"Upgrade: %s\"", api.ErrInvalid, frame.Protocol))
		return
	}

	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.writeError(w, r, fmt.Errorf("exec: take over the connection: %w", err))
		return
	}
	if rec, ok := w.(*recorder); ok {
		rec.hijacked()
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+frame.Protocol+"\r\n\r\n"); err != nil {
		return
	}

	s.metrics.execs.Inc()
	defer s.metrics.execs.Dec()
	ctx, done := streamContext(r.Context())
	defer done()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	fw := frame.NewWriter(conn)
	req.Stdout = fw.Stream(frame.Stdout)
	if !req.TTY {
		req.Stderr = fw.Stream(frame.Stderr)
	}
	var stdinR *io.PipeReader
	var stdinW *io.PipeWriter
	if stdin {
		stdinR, stdinW = io.Pipe()
		req.Stdin = stdinR
	}
	var resize chan api.TermSize
	if req.TTY {
		resize = make(chan api.TermSize, 1)
		req.Resize = resize
	}

	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		err := readClientFrames(brw.Reader, stdinW, resize)
		if stdinW != nil {
			stdinW.CloseWithError(io.ErrUnexpectedEOF) // no-op after a clean close
		}
		if err != nil {
			// The client went away or broke the protocol: end the command.
			cancel(err)
		}
	}()

	code, err := s.b.Exec(ctx, req)
	if stdinR != nil {
		stdinR.Close() // unblocks a stdin write that nobody will read now
	}
	status := frame.ExitStatus{ExitCode: &code}
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errProtocol) {
			err = fmt.Errorf("%w: %w", api.ErrInvalid, cause)
		}
		kind, _ := api.KindOf(err)
		status = frame.ExitStatus{Error: &api.Error{Kind: kind, Message: err.Error()}}
		if info, ok := r.Context().Value(infoKey{}).(*requestInfo); ok {
			info.err = err.Error()
		}
	}
	payload, _ := json.Marshal(status)
	if fw.WriteFrame(frame.Exit, payload) == nil {
		// Let the client read the exit status and close first: closing
		// with its frames unread could reset the connection under it.
		if cw, ok := conn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			conn.SetReadDeadline(time.Now().Add(exitDrain))
			<-readDone
		}
	}
	conn.Close()
	<-readDone
}

// readClientFrames feeds the client's frames to the command until the
// client closes the connection: stdin to stdin (blocking, which is the
// flow control), resizes to the resize channel (the latest wins).
func readClientFrames(r io.Reader, stdin *io.PipeWriter, resize chan api.TermSize) error {
	fr := frame.NewReader(r)
	for {
		stream, p, err := fr.Next()
		if errors.Is(err, frame.ErrTooLarge) {
			return fmt.Errorf("%w: %w", errProtocol, err)
		}
		if err != nil {
			return err
		}
		switch stream {
		case frame.Stdin:
			if stdin != nil {
				// A command that stopped reading is not an error: its
				// exit status is on its way.
				stdin.Write(p)
			}
		case frame.StdinClose:
			if stdin != nil {
				stdin.Close()
			}
		case frame.Resize:
			var size api.TermSize
			if err := json.Unmarshal(p, &size); err != nil {
				return fmt.Errorf("%w: resize frame: %v", errProtocol, err)
			}
			if resize != nil {
				select {
				case <-resize:
				default:
				}
				resize <- size
			}
		default:
			return fmt.Errorf("%w: unexpected frame on stream %d", errProtocol, stream)
		}
	}
}

// headerHas reports whether a comma-separated header lists token.
func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
