package main

import (
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"strconv"
)

// gRPC status codes and grpc.health.v1 serving states used here.
const (
	grpcOK            = 0
	grpcInvalidArg    = 3
	grpcUnimplemented = 12

	servingStatusServing    = 1
	servingStatusNotServing = 2
)

// maxGRPCMessage bounds a health check request.
const maxGRPCMessage = 64 << 10

// grpcHealth serves grpc.health.v1.Health/Check without a gRPC library: the
// request and answer are one length-prefixed protobuf message each
// (HealthCheckRequest{string service = 1}, HealthCheckResponse{enum status =
// 1}), and the outcome travels in the grpc-status trailer. Service
// "readiness" reports readiness; any other service, "" included, liveness.
func (s *server) grpcHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/grpc.health.v1.Health/Check" {
		grpcError(w, grpcUnimplemented, "only grpc.health.v1.Health/Check is served")
		return
	}
	service, err := readHealthRequest(r.Body)
	if err != nil {
		grpcError(w, grpcInvalidArg, err.Error())
		return
	}
	ok := s.healthy()
	if service == "readiness" {
		ok = s.ready()
	}
	status := byte(servingStatusNotServing)
	if ok {
		status = servingStatusServing
	}
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Trailer", "Grpc-Status, Grpc-Message")
	w.WriteHeader(http.StatusOK)
	// Uncompressed frame of 2 bytes: field 1, varint, status.
	w.Write([]byte{0, 0, 0, 0, 2, 0x08, status})
	h.Set("Grpc-Status", strconv.Itoa(grpcOK))
	h.Set("Grpc-Message", "")
}

// grpcError answers with a trailers-only response carrying a gRPC error.
func grpcError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(code))
	h.Set("Grpc-Message", msg)
	w.WriteHeader(http.StatusOK)
}

// readHealthRequest reads one gRPC frame and returns the service field of the
// HealthCheckRequest it carries.
func readHealthRequest(body io.Reader) (string, error) {
	var prefix [5]byte
	if _, err := io.ReadFull(body, prefix[:]); err != nil {
		return "", errors.New("short gRPC frame")
	}
	if prefix[0] != 0 {
		return "", errors.New("compressed gRPC messages are not supported")
	}
	n := binary.BigEndian.Uint32(prefix[1:])
	if n > maxGRPCMessage {
		return "", errors.New("gRPC message too large")
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(body, msg); err != nil {
		return "", errors.New("short gRPC message")
	}
	var service string
	for len(msg) > 0 {
		key, k := binary.Uvarint(msg)
		if k <= 0 {
			return "", errors.New("malformed protobuf")
		}
		msg = msg[k:]
		field, wire := key>>3, key&7
		switch wire {
		case 0: // varint
			_, k := binary.Uvarint(msg)
			if k <= 0 {
				return "", errors.New("malformed protobuf")
			}
			msg = msg[k:]
		case 1: // fixed64
			if len(msg) < 8 {
				return "", errors.New("malformed protobuf")
			}
			msg = msg[8:]
		case 2: // length-delimited
			l, k := binary.Uvarint(msg)
			if k <= 0 || l > uint64(len(msg)-k) {
				return "", errors.New("malformed protobuf")
			}
			if field == 1 {
				service = string(msg[k : k+int(l)])
			}
			msg = msg[k+int(l):]
		case 5: // fixed32
			if len(msg) < 4 {
				return "", errors.New("malformed protobuf")
			}
			msg = msg[4:]
		default:
			return "", errors.New("malformed protobuf")
		}
	}
	return service, nil
}
