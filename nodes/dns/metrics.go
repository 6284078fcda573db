package dns

import (
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's counters. Label values that every query uses
// are resolved once, so that counting costs no map lookup.
type metrics struct {
	queries          *prometheus.CounterVec
	answers          *prometheus.CounterVec
	forwards         *prometheus.CounterVec
	upstreamFailures *prometheus.CounterVec
	failures         *prometheus.CounterVec

	udp, tcp       prometheus.Counter
	answerRcode    [16]prometheus.Counter
	forwardRcode   [16]prometheus.Counter
	forwardFailed  prometheus.Counter
	writeFailed    prometheus.Counter
	malformedQuery prometheus.Counter
	overload       prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		queries:  counterVec("queries_total", "DNS queries received, by transport.", "proto"),
		answers:  counterVec("answers_total", "Queries answered from the cluster records, by response code.", "rcode"),
		forwards: counterVec("forwards_total", "Queries answered by an upstream resolver, by response code.", "rcode"),
		upstreamFailures: counterVec("upstream_failures_total",
			"Forwarding attempts that failed (timeout, network error, SERVFAIL or REFUSED), by upstream.", "upstream"),
		failures: counterVec("failures_total", "Queries that failed: forward (every upstream failed, SERVFAIL sent), "+
			"malformed (FORMERR or NOTIMP sent), overload (too many forwards waiting, REFUSED sent), "+
			"write (the response could not be sent).", "reason"),
	}
	m.udp = m.queries.WithLabelValues("udp")
	m.tcp = m.queries.WithLabelValues("tcp")
	for rc := range m.answerRcode {
		name := rcodeName(rc)
		m.answerRcode[rc] = m.answers.WithLabelValues(name)
		m.forwardRcode[rc] = m.forwards.WithLabelValues(name)
	}
	m.forwardFailed = m.failures.WithLabelValues("forward")
	m.writeFailed = m.failures.WithLabelValues("write")
	m.malformedQuery = m.failures.WithLabelValues("malformed")
	m.overload = m.failures.WithLabelValues("overload")
	return m
}

func counterVec(name, help, label string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "berth", Subsystem: "dns", Name: name, Help: help}, []string{label})
}

func rcodeName(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return "OTHER"
}

func (m *metrics) answer(rc int) prometheus.Counter {
	if rc < 0 || rc >= len(m.answerRcode) {
		rc = len(m.answerRcode) - 1
	}
	return m.answerRcode[rc]
}

func (m *metrics) forward(rc int) prometheus.Counter {
	if rc < 0 || rc >= len(m.forwardRcode) {
		rc = len(m.forwardRcode) - 1
	}
	return m.forwardRcode[rc]
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.queries, m.answers, m.forwards, m.upstreamFailures, m.failures}
}
