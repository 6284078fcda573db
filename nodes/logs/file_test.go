package logs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeClock returns t0, t0+1s, t0+2s, ...
func fakeClock() func() time.Time {
	n := 0
	return func() time.Time {
		n++
		return t0.Add(time.Duration(n-1) * time.Second)
	}
}

func openTest(t *testing.T, maxSize int64, maxFiles int) (*File, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c", "0.log")
	lf, err := OpenFile(path, maxSize, maxFiles)
	if err != nil {
		t.Fatal(err)
	}
	lf.now = fakeClock()
	t.Cleanup(func() { lf.Close() })
	return lf, path
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCopySplitsLines(t *testing.T) {
	lf, path := openTest(t, 0, 0)
	long := strings.Repeat("a", MaxLineSize) + strings.Repeat("b", 10)
	in := "one\n\nthree\n" + long + "\n" + "no newline at the end"
	if err := lf.Copy(strings.NewReader(in), Stderr); err != nil {
		t.Fatal(err)
	}
	want := "2024-05-06T07:08:09.123456789Z stderr F one\n" +
		"2024-05-06T07:08:10.123456789Z stderr F \n" +
		"2024-05-06T07:08:11.123456789Z stderr F three\n" +
		"2024-05-06T07:08:12.123456789Z stderr P " + strings.Repeat("a", MaxLineSize) + "\n" +
		"2024-05-06T07:08:13.123456789Z stderr F bbbbbbbbbb\n" +
		"2024-05-06T07:08:14.123456789Z stderr F no newline at the end\n"
	if got := read(t, path); got != want {
		t.Errorf("log file:\n%.300s\nwant:\n%.300s", got, want)
	}
}

func TestRotation(t *testing.T) {
	// Each line is 46 bytes ("<35-byte time> stdout F lineN\n"): two fit
	// in 100 bytes, and three files are kept.
	lf, path := openTest(t, 100, 3)
	for i := 0; i < 7; i++ {
		if err := lf.Write(Entry{t0, Stdout, Full, []byte(fmt.Sprintf("line%d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	files, err := Files(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{path + ".2", path + ".3", path}
	if fmt.Sprint(files) != fmt.Sprint(want) {
		t.Fatalf("Files = %v, want %v", files, want)
	}
	var got []string
	for _, f := range files {
		for _, l := range strings.Split(strings.TrimSpace(read(t, f)), "\n") {
			e, err := ParseEntry([]byte(l))
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(e.Content))
		}
	}
	// line0 and line1 were dropped with the oldest file.
	if fmt.Sprint(got) != "[line2 line3 line4 line5 line6]" {
		t.Errorf("lines kept: %v", got)
	}
	for _, f := range files {
		if fi, _ := os.Stat(f); fi.Size() > 100 {
			t.Errorf("%s has %d bytes, cap 100", f, fi.Size())
		}
	}

	// Reopening appends to the current file, and goes on numbering.
	lf.Close()
	lf2, err := OpenFile(path, 100, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer lf2.Close()
	if err := lf2.Write(Entry{t0, Stdout, Full, []byte("again")}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(read(t, path), "\n"); n != 2 {
		t.Errorf("current file has %d lines after reopening, want 2", n)
	}
	lf2.Write(Entry{t0, Stdout, Full, []byte("rotates")})
	if files, _ := Files(path); fmt.Sprint(files) != fmt.Sprint([]string{path + ".3", path + ".4", path}) {
		t.Errorf("after reopening and rotating: %v", files)
	}

	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	if files, _ := Files(path); len(files) != 0 {
		t.Errorf("files left after Remove: %v", files)
	}
}

func TestFilesIgnoresOthers(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"0.log", "0.log.1", "0.log.10", "0.log.x", "0.log.01", "1.log", "1.log.1", "0.log.2"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o644)
	}
	files, err := Files(filepath.Join(dir, "0.log"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	if got := strings.Join(names, " "); got != "0.log.1 0.log.2 0.log.10 0.log" {
		t.Errorf("Files = %s", got)
	}
}
