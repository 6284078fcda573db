package agentclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"berth.dev/berth/nodes/agent/httpapi/frame"
	"berth.dev/berth/nodes/api"
)

// Exec runs a command in a running container and returns its exit code
// (-1 with an error when it could not run or its end was not seen). The
// session takes a connection of its own, upgraded to the frame protocol
// of package frame.
//
// Stdin is copied until it ends (then the command's stdin is closed); a
// Read still blocked when the command exits is left to return on its own,
// and its data is dropped. With TTY, sizes sent on Resize reach the
// terminal. Output is written to Stdout and Stderr (nil: discarded) as it
// comes; a slow writer slows the command down rather than buffering.
// Timeout, when set, bounds the whole session.
func (c *Client) Exec(ctx context.Context, req api.ExecRequest) (int, error) {
	path, err := podPath(req.Pod, "exec")
	if err != nil {
		return -1, fmt.Errorf("exec: %w", err)
	}
	if len(req.Command) == 0 {
		return -1, fmt.Errorf("exec in %s: %w: no command", req.Pod, api.ErrInvalid)
	}
	if req.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, req.Timeout)
		defer cancel()
	}
	q := url.Values{"command": req.Command}
	if req.Container != "" {
		q.Set("container", req.Container)
	}
	setBool(q, "tty", req.TTY)
	setBool(q, "stdin", req.Stdin != nil)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+path+"?"+q.Encode(), nil)
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", req.Pod, err)
	}
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", frame.Protocol)
	resp, err := c.send(hreq)
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", req.Pod, err)
	}
	conn, ok := resp.Body.(io.ReadWriteCloser)
	if resp.StatusCode != http.StatusSwitchingProtocols || !ok {
		resp.Body.Close()
		return -1, fmt.Errorf("exec in %s: %w: the agent answered %s instead of switching to %s", req.Pod, api.ErrInternal, resp.Status, frame.Protocol)
	}
	defer conn.Close()
	// Closing the connection ends the session: the agent kills the command.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	done := make(chan struct{})
	defer close(done)
	fw := frame.NewWriter(conn)
	if req.Stdin != nil {
		go sendStdin(fw, req.Stdin)
	}
	if req.TTY && req.Resize != nil {
		go sendResizes(fw, req.Resize, done)
	}

	stdout, stderr := req.Stdout, req.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	fr := frame.NewReader(conn)
	for {
		stream, p, err := fr.Next()
		if err != nil {
			if ctx.Err() != nil {
				return -1, ctx.Err()
			}
			return -1, fmt.Errorf("exec in %s: %w: the session ended without an exit status: %w", req.Pod, api.ErrUnavailable, err)
		}
		switch stream {
		case frame.Stdout:
			_, err = stdout.Write(p)
		case frame.Stderr:
			_, err = stderr.Write(p)
		case frame.Exit:
			var st frame.ExitStatus
			if err := json.Unmarshal(p, &st); err != nil {
				return -1, fmt.Errorf("exec in %s: %w: exit status: %w", req.Pod, api.ErrInternal, err)
			}
			switch {
			case st.Error != nil:
				return -1, fmt.Errorf("exec in %s: %w", req.Pod, st.Error.Err())
			case st.ExitCode == nil:
				return -1, fmt.Errorf("exec in %s: %w: exit status without a code", req.Pod, api.ErrInternal)
			}
			return *st.ExitCode, nil
		default:
			return -1, fmt.Errorf("exec in %s: %w: unexpected frame on stream %d", req.Pod, api.ErrInternal, stream)
		}
		if err != nil {
			return -1, fmt.Errorf("exec in %s: write output: %w", req.Pod, err)
		}
	}
}

// sendStdin copies r to the stdin stream, then closes it.
func sendStdin(fw *frame.Writer, r io.Reader) {
	buf := make([]byte, frame.MaxPayload)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if fw.WriteFrame(frame.Stdin, buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			fw.WriteFrame(frame.StdinClose, nil)
			return
		}
	}
}

func sendResizes(fw *frame.Writer, sizes <-chan api.TermSize, done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case size, ok := <-sizes:
			if !ok {
				return
			}
			b, _ := json.Marshal(size)
			if fw.WriteFrame(frame.Resize, b) != nil {
				return
			}
		}
	}
}
