package sshx

import "strings"

// Quote returns s as one word of a POSIX shell command line: unchanged
// when it holds only characters no shell treats specially, otherwise in
// single quotes, each single quote inside closing the quotes, escaped, and
// reopening them:
//
//	it's  →  'it'\''s'
//
// Every argument that sshx puts on a remote command line goes through
// Quote. A shell word cannot carry a NUL byte; callers validate their
// input (see BootstrapOptions.Validate) before quoting it.
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	if isSafeWord(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// QuoteArgs quotes each argument and joins them with spaces.
func QuoteArgs(args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = Quote(a)
	}
	return strings.Join(q, " ")
}

// isSafeWord reports whether s needs no quoting: letters, digits and
// @%+:,./_- only. Not '=' (a leading NAME=value word is an assignment) nor
// '~' (tilde expansion), whatever the word's position.
func isSafeWord(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("@%+:,./_-", c) >= 0:
		default:
			return false
		}
	}
	return true
}
