package sshx

import (
	"berth.dev/berth/internal/testenv"

	"os/exec"
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "''"},
		{"plain", "plain"},
		{"/var/lib/berth", "/var/lib/berth"},
		{"--state-dir", "--state-dir"},
		{"a,b:c@d%e+f_g.h", "a,b:c@d%e+f_g.h"},
		{"two words", "'two words'"},
		{"it's", `'it'\''s'`},
		{"'", `''\'''`},
		{"''", `''\'''\'''`},
		{"$HOME", "'$HOME'"},
		{"`id`", "'`id`'"},
		{"$(id)", "'$(id)'"},
		{"a;rm -rf /", "'a;rm -rf /'"},
		{"a&&b", "'a&&b'"},
		{"a|b", "'a|b'"},
		{"x>y", "'x>y'"},
		{"*", "'*'"},
		{"?", "'?'"},
		{"[a]", "'[a]'"},
		{"~", "'~'"},
		{"~root", "'~root'"},
		{"FOO=bar", "'FOO=bar'"},
		{"a\nb", "'a\nb'"},
		{"tab\there", "'tab\there'"},
		{`back\slash`, `'back\slash'`},
		{`"double"`, `'"double"'`},
		{"{a,b}", "'{a,b}'"},
		{"!x", "'!x'"},
		{"#comment", "'#comment'"},
		{"é", "'é'"},
	} {
		if got := Quote(c.in); got != c.want {
			t.Errorf("Quote(%q) = %s, want %s", c.in, got, c.want)
		}
	}
}

// TestQuoteRoundTrip has a real shell print each quoted word back: what
// arrives must be exactly what was quoted, one argument each.
func TestQuoteRoundTrip(t *testing.T) {
	testenv.Require(t, "sh")
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	words := []string{
		"", "plain", "two words", "it's", "'", "\"", "$HOME", "${HOME}", "`id`", "$(id)",
		"a;b", "a&b", "a|b", "a>b", "a<b", "*", "?", "[a]", "~", "~root", "FOO=bar",
		"a\nb", "\t", `\`, `\\'`, "{a,b}", "!x", "#c", " leading", "trailing ", "é ü",
		"-n", "--", "'$(touch /tmp/pwned)'",
	}
	script := "for a in " + QuoteArgs(words...) + `; do printf '%s\0' "$a"; done`
	out, err := exec.Command(sh, "-c", script).Output()
	if err != nil {
		t.Fatalf("sh: %v", err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if len(got) != len(words) {
		t.Fatalf("got %d words back, want %d: %q", len(got), len(words), got)
	}
	for i := range words {
		if got[i] != words[i] {
			t.Errorf("word %d: got %q back, want %q", i, got[i], words[i])
		}
	}
}
