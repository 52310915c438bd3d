/*
 * A minimal hls::stream for C simulation with g++, written for bnnc (Apache-2.0): an
 * unbounded queue. Vitis HLS uses its own <hls_stream.h>; this folder (csim/) is never
 * added to a Vitis project. Reading an empty stream is a design error: it stops the
 * simulation with a message instead of returning garbage.
 */
#ifndef BNNC_CSIM_HLS_STREAM_H
#define BNNC_CSIM_HLS_STREAM_H

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>

namespace hls {

template <typename T> class stream {
public:
  stream() : name_("stream") {}
  explicit stream(const char *name) : name_(name) {}

  T read() {
    if (queue_.empty()) {
      std::fprintf(stderr, "csim: read from empty stream '%s'\n", name_.c_str());
      std::exit(2);
    }
    T v = queue_.front();
    queue_.pop_front();
    return v;
  }
  void read(T &v) { v = read(); }
  bool read_nb(T &v) {
    if (queue_.empty()) return false;
    v = read();
    return true;
  }
  void write(const T &v) { queue_.push_back(v); }
  bool write_nb(const T &v) {
    write(v);
    return true;
  }
  void operator>>(T &v) { v = read(); }
  void operator<<(const T &v) { write(v); }
  bool empty() const { return queue_.empty(); }
  bool full() const { return false; }
  std::size_t size() const { return queue_.size(); }

private:
  std::string name_;
  std::deque<T> queue_;
};

} // namespace hls

#endif
