package logs

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

func TestAppendEntry(t *testing.T) {
	for _, c := range []struct {
		e    Entry
		want string
	}{
		{Entry{t0, Stdout, Full, []byte("hello")}, "2024-05-06T07:08:09.123456789Z stdout F hello\n"},
		{Entry{t0, Stderr, Partial, []byte("part")}, "2024-05-06T07:08:09.123456789Z stderr P part\n"},
		{Entry{t0.Truncate(time.Second), Stdout, Full, nil}, "2024-05-06T07:08:09Z stdout F \n"},
		{Entry{t0.In(time.FixedZone("", 2*3600)), Stdout, Full, []byte("a b  c")}, "2024-05-06T09:08:09.123456789+02:00 stdout F a b  c\n"},
	} {
		if got := string(AppendEntry(nil, c.e)); got != c.want {
			t.Errorf("AppendEntry(%+v) = %q, want %q", c.e, got, c.want)
		}
	}
}

func TestParseEntry(t *testing.T) {
	for _, c := range []struct {
		line    string
		want    Entry
		wantErr bool
	}{
		{line: "2024-05-06T07:08:09.123456789Z stdout F hello\n", want: Entry{t0, Stdout, Full, []byte("hello")}},
		{line: "2024-05-06T07:08:09.123456789Z stderr P  two  spaces ", want: Entry{t0, Stderr, Partial, []byte(" two  spaces ")}},
		{line: "2024-05-06T07:08:09.123456789Z stdout F \n", want: Entry{t0, Stdout, Full, []byte{}}},
		{line: "2024-05-06T07:08:09.123456789Z stdout F", want: Entry{t0, Stdout, Full, nil}},
		{line: "2024-05-06T07:08:09.123456789Z stdout P:extra x", want: Entry{t0, Stdout, Partial, []byte("x")}},
		{line: "2024-05-06T09:08:09.123456789+02:00 stdout F z", want: Entry{t0, Stdout, Full, []byte("z")}},
		{line: "", wantErr: true},
		{line: "not-a-time stdout F x", wantErr: true},
		{line: "2024-05-06T07:08:09Z stdin F x", wantErr: true},
		{line: "2024-05-06T07:08:09Z stdout X x", wantErr: true},
		{line: "2024-05-06T07:08:09Z stdout", wantErr: true},
	} {
		got, err := ParseEntry([]byte(c.line))
		if c.wantErr {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseEntry(%q) = %+v, %v; want ErrMalformed", c.line, got, err)
			}
			continue
		}
		if err != nil || !got.Time.Equal(c.want.Time) || got.Stream != c.want.Stream || got.Tag != c.want.Tag || string(got.Content) != string(c.want.Content) {
			t.Errorf("ParseEntry(%q) = %+v, %v; want %+v", c.line, got, err, c.want)
		}
	}
}

func TestEntryRoundTrip(t *testing.T) {
	for _, content := range []string{"", "x", "with spaces  and\ttabs", strings.Repeat("é", 100)} {
		e := Entry{t0, Stderr, Partial, []byte(content)}
		got, err := ParseEntry(AppendEntry(nil, e))
		if err != nil || string(got.Content) != content || got.Tag != Partial || got.Stream != Stderr || !got.Time.Equal(t0) {
			t.Errorf("round trip of %q: %+v %v", content, got, err)
		}
	}
}
