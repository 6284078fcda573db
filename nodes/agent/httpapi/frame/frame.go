// Package frame is the wire format of the agent's exec sessions, shared by
// the server (package httpapi) and the client (package agentclient)
// without either importing the other.
//
// A client asks for a session with
//
//	POST /v1/pods/{namespace}/{name}/exec?command=sh&command=-c&command=...&container=&tty=&stdin=
//	Connection: Upgrade
//	Upgrade: berth-exec/1
//
// and the server answers 101 Switching Protocols (or an ordinary error
// answer: a JSON api.Error). From then on both sides exchange frames on the
// connection: one byte of stream id, four bytes of big-endian payload
// length, then the payload, at most MaxPayload bytes.
//
//	client → server: Stdin (0), Resize (3, JSON api.TermSize), StdinClose (5)
//	server → client: Stdout (1), Stderr (2), Exit (4, JSON Exit), then close
//
// There is no flow control of its own: a side that does not read stalls
// the other through TCP's (or SSH's) window. A client that goes away ends
// the session (the command is killed through its context).
package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"berth.dev/berth/nodes/api"
)

// Protocol is the Upgrade token of an exec session.
const Protocol = "berth-exec/1"

// Stream ids.
const (
	Stdin      byte = 0
	Stdout     byte = 1
	Stderr     byte = 2
	Resize     byte = 3
	Exit       byte = 4
	StdinClose byte = 5
)

// MaxPayload bounds one frame's payload; longer writes are split.
const MaxPayload = 32 << 10

// headerLen is the stream id and the payload length.
const headerLen = 5

// ErrTooLarge is returned by a Reader for a frame that announces a
// payload over MaxPayload: the peer does not speak this protocol.
var ErrTooLarge = errors.New("frame larger than the protocol allows")

// ExitStatus is the payload of the Exit frame: {"exitCode": N} when the
// command ran to its end, or {"error": {"kind": ..., "message": ...}}
// when it could not run or finish.
type ExitStatus struct {
	ExitCode *int       `json:"exitCode,omitempty"`
	Error    *api.Error `json:"error,omitempty"`
}

// Writer writes frames. It is safe for concurrent use: each frame goes
// out in one Write of the underlying writer, whole.
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
	err error
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// WriteFrame writes one frame; len(p) must not exceed MaxPayload. After a
// write fails, every later one fails with the same error.
func (w *Writer) WriteFrame(stream byte, p []byte) error {
	if len(p) > MaxPayload {
		return fmt.Errorf("write frame: %d bytes: %w", len(p), ErrTooLarge)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	w.buf = append(w.buf[:0], stream, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(w.buf[1:headerLen], uint32(len(p)))
	w.buf = append(w.buf, p...)
	if _, err := w.w.Write(w.buf); err != nil {
		w.err = err
		return err
	}
	return nil
}

// Stream returns an io.Writer whose writes become frames on stream id,
// split at MaxPayload. An empty write sends nothing.
func (w *Writer) Stream(id byte) io.Writer { return streamWriter{w, id} }

type streamWriter struct {
	w  *Writer
	id byte
}

func (s streamWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), MaxPayload)]
		if err := s.w.WriteFrame(s.id, chunk); err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

// Reader reads frames. It is not safe for concurrent use.
type Reader struct {
	r   io.Reader
	hdr [headerLen]byte
	buf []byte
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Next reads one frame. The payload is valid until the next call. At a
// clean end between frames it returns io.EOF; a frame cut short is
// io.ErrUnexpectedEOF.
func (r *Reader) Next() (stream byte, payload []byte, err error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(r.hdr[1:])
	if n > MaxPayload {
		return 0, nil, fmt.Errorf("read frame on stream %d: %d bytes: %w", r.hdr[0], n, ErrTooLarge)
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n, max(int(n), 4<<10))
	}
	r.buf = r.buf[:n]
	if _, err := io.ReadFull(r.r, r.buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return r.hdr[0], r.buf, nil
}
