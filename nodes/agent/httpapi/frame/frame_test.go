package frame

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"berth.dev/berth/nodes/api"
)

func TestWriteFrameEncoding(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stream  byte
		payload []byte
		want    []byte
	}{
		{"empty stdin close", StdinClose, nil, []byte{5, 0, 0, 0, 0}},
		{"stdout", Stdout, []byte("hi"), []byte{1, 0, 0, 0, 2, 'h', 'i'}},
		{"resize", Resize, []byte(`{"Width":80,"Height":24}`), append([]byte{3, 0, 0, 0, 24}, `{"Width":80,"Height":24}`...)},
		{"max", Stdin, bytes.Repeat([]byte{'x'}, MaxPayload), append([]byte{0, 0, 0, 0x80, 0}, bytes.Repeat([]byte{'x'}, MaxPayload)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := NewWriter(&b).WriteFrame(tc.stream, tc.payload); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b.Bytes(), tc.want) {
				t.Errorf("wrote % x\nwant     % x", b.Bytes()[:min(b.Len(), 16)], tc.want[:min(len(tc.want), 16)])
			}
			s, p, err := NewReader(&b).Next()
			if err != nil || s != tc.stream || !bytes.Equal(p, tc.payload) {
				t.Errorf("read back stream %d, %d bytes, %v", s, len(p), err)
			}
		})
	}
}

func TestWriteFrameTooLarge(t *testing.T) {
	var b bytes.Buffer
	err := NewWriter(&b).WriteFrame(Stdout, make([]byte, MaxPayload+1))
	if !errors.Is(err, ErrTooLarge) || b.Len() != 0 {
		t.Errorf("err %v, wrote %d bytes", err, b.Len())
	}
}

func TestReaderErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input []byte
		want  error
	}{
		{"clean end", nil, io.EOF},
		{"header cut", []byte{1, 0, 0}, io.ErrUnexpectedEOF},
		{"payload cut", []byte{1, 0, 0, 0, 4, 'a', 'b'}, io.ErrUnexpectedEOF},
		{"empty payload cut", []byte{1, 0, 0, 0, 1}, io.ErrUnexpectedEOF},
		{"too large", []byte{1, 0, 0, 0x80, 1}, ErrTooLarge},
		{"not our protocol", []byte("HTTP/1.1 200 OK\r\n"), ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := NewReader(bytes.NewReader(tc.input)).Next()
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestStreamSplitsLongWrites(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n      int
		frames []int
	}{
		{"empty", 0, nil},
		{"one byte", 1, []int{1}},
		{"exactly one frame", MaxPayload, []int{MaxPayload}},
		{"one over", MaxPayload + 1, []int{MaxPayload, 1}},
		{"three", 2*MaxPayload + 7, []int{MaxPayload, MaxPayload, 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			data := bytes.Repeat([]byte("0123456789"), tc.n/10+1)[:tc.n]
			n, err := NewWriter(&b).Stream(Stderr).Write(data)
			if err != nil || n != tc.n {
				t.Fatalf("wrote %d, %v", n, err)
			}
			r := NewReader(&b)
			var got []int
			var back []byte
			for {
				s, p, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil || s != Stderr {
					t.Fatalf("stream %d, %v", s, err)
				}
				got = append(got, len(p))
				back = append(back, p...)
			}
			if len(got) != len(tc.frames) || !bytes.Equal(back, data) {
				t.Fatalf("frames %v, want %v", got, tc.frames)
			}
			for i := range got {
				if got[i] != tc.frames[i] {
					t.Errorf("frames %v, want %v", got, tc.frames)
				}
			}
		})
	}
}

// failAfter fails every write after the first n bytes.
type failAfter struct{ n int }

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		return 0, errors.New("broken pipe")
	}
	f.n -= len(p)
	return len(p), nil
}

func TestWriterStaysBroken(t *testing.T) {
	w := NewWriter(&failAfter{n: 6})
	if err := w.WriteFrame(Stdout, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrame(Stdout, []byte("b")); err == nil {
		t.Fatal("second frame should fail")
	}
	if _, err := w.Stream(Stdout).Write(nil); err != nil {
		t.Errorf("an empty write sends nothing, so cannot fail: %v", err)
	}
	if err := w.WriteFrame(Exit, nil); err == nil || !strings.Contains(err.Error(), "broken pipe") {
		t.Errorf("later frames must fail with the first error: %v", err)
	}
}

// Frames written concurrently never interleave.
func TestWriterConcurrent(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b)
	var wg sync.WaitGroup
	for _, s := range []byte{Stdout, Stderr} {
		wg.Go(func() {
			for range 100 {
				w.Stream(s).Write(bytes.Repeat([]byte{s}, 1000))
			}
		})
	}
	wg.Wait()
	r := NewReader(&b)
	for {
		s, p, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil || len(p) != 1000 || !bytes.Equal(p, bytes.Repeat([]byte{s}, 1000)) {
			t.Fatalf("interleaved frame on stream %d (%d bytes): %v", s, len(p), err)
		}
	}
}

// The exit status is one or the other, as the protocol says.
func TestExitStatusJSON(t *testing.T) {
	three := 3
	for _, tc := range []struct {
		st   ExitStatus
		want string
	}{
		{ExitStatus{ExitCode: new(int)}, `{"exitCode":0}`},
		{ExitStatus{ExitCode: &three}, `{"exitCode":3}`},
		{ExitStatus{Error: &api.Error{Kind: api.KindNotFound, Message: "no pod"}}, `{"error":{"kind":"NotFound","message":"no pod"}}`},
	} {
		b, err := json.Marshal(tc.st)
		if err != nil || string(b) != tc.want {
			t.Errorf("%s, %v; want %s", b, err, tc.want)
		}
	}
}
