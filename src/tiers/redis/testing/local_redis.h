// Real redis-server processes on free loopback ports, for the Redis tier's tests and benchmark:
// start, kill, pause, resume, restart on the same port, and three-node clusters made with
// `redis-cli --cluster create`. Plus a blocking admin connection for commands a store never sends
// (FLUSHALL, SETRANGE, CLUSTER SETSLOT, MIGRATE, ...).
//
// Servers run with no persistence, bound to 127.0.0.1, in a directory of their own that is removed
// with the object; a server still running when its object dies is killed. Programs are found on
// PATH (redis_programs_missing() says which are not).
//
// Thread safety: one thread drives a LocalRedis; admin() may be called from any thread.
#pragma once

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tierkv/status.h"
#include "tiers/redis/resp.h"

extern char** environ;

namespace tierkv::redis::testing {

// Full path of `name` on PATH, or "" when it is not there.
inline std::string find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  for (std::size_t start = 0; start <= p.size();) {
    std::size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string cand = p.substr(start, end - start) + "/" + name;
    if (!cand.empty() && ::access(cand.c_str(), X_OK) == 0) return cand;
    start = end + 1;
  }
  return "";
}

// "" when redis-server and redis-cli are on PATH, else a message naming what is missing.
inline std::string redis_programs_missing() {
  std::string missing;
  for (const char* p : {"redis-server", "redis-cli"})
    if (find_program(p).empty()) missing += std::string(missing.empty() ? "" : ", ") + p;
  if (missing.empty()) return "";
  return missing + " not on PATH (install redis-server and redis-tools: scripts/setup.sh)";
}

inline bool port_free(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(std::uint16_t(port));
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

// A loopback port that is free now, and whose cluster bus port (+10000) is free too.
inline int free_port() {
  static int next = 20000 + int(::getpid() % 5000) * 4;
  for (int tries = 0; tries < 20000; ++tries) {
    int p = next;
    next = next >= 55000 ? 20000 : next + 1;
    if (port_free(p) && port_free(p + 10000)) return p;
  }
  return 0;
}

// Runs `argv` and waits for it; its exit status (or -1 when it could not start). Output goes to
// `log` (appended) when given, else to /dev/null.
inline int run_program(const std::vector<std::string>& argv, const std::string& log = "") {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  std::string out = log.empty() ? "/dev/null" : log;
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const std::string& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// One command on a new blocking connection to 127.0.0.1:`port`, with a timeout. Unavailable when
// the server cannot be reached or does not answer; the reply (error replies included) otherwise.
inline Result<ReplyPtr> admin(int port, const std::vector<std::string>& args,
                              const std::string& password = "",
                              std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  timeval tv{long(timeout.count() / 1000), long(timeout.count() % 1000) * 1000};
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port, tv);
  if (c == nullptr || c->err) {
    std::string why = c ? c->errstr : "out of memory";
    if (c) redisFree(c);
    return unavailable("admin connection to port " + std::to_string(port) + ": " + why);
  }
  redisSetTimeout(c, tv);
  auto command = [&](const std::vector<std::string>& a) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const std::string& s : a) {
      argv.push_back(s.data());
      lens.push_back(s.size());
    }
    return ReplyPtr(
        static_cast<redisReply*>(redisCommandArgv(c, int(argv.size()), argv.data(), lens.data())));
  };
  if (!password.empty()) command({"AUTH", password});
  ReplyPtr r = command(args);
  std::string why = c->errstr;
  redisFree(c);
  if (!r) return unavailable("admin command on port " + std::to_string(port) + ": " + why);
  return r;
}

struct LocalRedisOptions {
  std::string password;            // requirepass
  bool cluster = false;            // cluster-enabled, with full coverage not required
  std::vector<std::string> extra;  // more "--name value" arguments
};

class LocalRedis {
 public:
  // Starts a server on a free port and waits until it answers.
  static Result<std::unique_ptr<LocalRedis>> start(const LocalRedisOptions& o = {}) {
    ::signal(SIGPIPE, SIG_IGN);  // admin connections write with plain write()
    std::string missing = redis_programs_missing();
    if (!missing.empty()) return unavailable(missing);
    std::unique_ptr<LocalRedis> r(new LocalRedis(o));
    char dir[] = "/tmp/tierkv-redis-XXXXXX";
    if (::mkdtemp(dir) == nullptr) return io_error("mkdtemp for a redis server directory failed");
    r->dir_ = dir;
    r->port_ = free_port();
    TIERKV_RETURN_IF_ERROR(r->launch());
    return r;
  }
  ~LocalRedis() {
    kill();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  LocalRedis(const LocalRedis&) = delete;
  LocalRedis& operator=(const LocalRedis&) = delete;

  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  bool running() const { return pid_ > 0; }

  // SIGKILL, and wait for the process to go.
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGCONT);
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }
  void pause() {
    if (pid_ > 0) ::kill(pid_, SIGSTOP);
  }
  void resume() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
  }
  // Starts the server again on the same port (empty: nothing was persisted).
  Status restart() {
    kill();
    return launch();
  }

  Result<ReplyPtr> command(const std::vector<std::string>& args) const {
    return admin(port_, args, options_.password);
  }

 private:
  explicit LocalRedis(LocalRedisOptions o) : options_(std::move(o)) {}

  Status launch() {
    std::vector<std::string> argv = {find_program("redis-server"),
                                     "--port",
                                     std::to_string(port_),
                                     "--bind",
                                     "127.0.0.1",
                                     "--save",
                                     "",
                                     "--appendonly",
                                     "no",
                                     "--dir",
                                     dir_,
                                     "--logfile",
                                     dir_ + "/redis.log"};
    if (!options_.password.empty()) argv.insert(argv.end(), {"--requirepass", options_.password});
    if (options_.cluster) {
      std::filesystem::remove(dir_ + "/nodes.conf");
      argv.insert(argv.end(),
                  {"--cluster-enabled", "yes", "--cluster-config-file", dir_ + "/nodes.conf",
                   "--cluster-node-timeout", "3000", "--cluster-require-full-coverage", "no"});
    }
    argv.insert(argv.end(), options_.extra.begin(), options_.extra.end());
    std::vector<char*> args;
    for (std::string& a : argv)
      args.push_back(a.data());
    args.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    int rc = ::posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      pid_ = -1;
      return unavailable("could not start redis-server: " + std::string(std::strerror(rc)));
    }
    return wait_ready();
  }

  Status wait_ready() {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < until) {
      auto r = admin(port_, {"PING"}, options_.password, std::chrono::milliseconds(500));
      if (r.ok() && is_status(r->get(), "PONG")) return Status::Ok();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return unavailable("redis-server on port " + std::to_string(port_) +
                       " did not answer PING within 10 s (log: " + dir_ + "/redis.log)");
  }

  LocalRedisOptions options_;
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

// `n` cluster nodes, created into one cluster of masters only, every slot assigned.
class LocalRedisCluster {
 public:
  static Result<std::unique_ptr<LocalRedisCluster>> start(int n = 3) {
    std::unique_ptr<LocalRedisCluster> c(new LocalRedisCluster);
    LocalRedisOptions o;
    o.cluster = true;
    std::vector<std::string> argv = {find_program("redis-cli"), "--cluster", "create"};
    for (int i = 0; i < n; ++i) {
      TIERKV_ASSIGN_OR_RETURN(auto node, LocalRedis::start(o));
      argv.push_back("127.0.0.1:" + std::to_string(node->port()));
      c->nodes_.push_back(std::move(node));
    }
    argv.insert(argv.end(), {"--cluster-replicas", "0", "--cluster-yes"});
    std::string log = c->nodes_[0]->dir() + "/create.log";
    if (run_program(argv, log) != 0)
      return unavailable("redis-cli --cluster create failed (log: " + log + ")");
    return c->wait_ok() ? Result<std::unique_ptr<LocalRedisCluster>>(std::move(c))
                        : Result<std::unique_ptr<LocalRedisCluster>>(
                              unavailable("the redis cluster did not reach state ok in 15 s"));
  }

  int size() const { return int(nodes_.size()); }
  LocalRedis& node(int i) { return *nodes_[std::size_t(i)]; }
  // The node index listening on `port`, or -1.
  int index_of(int port) const {
    for (std::size_t i = 0; i < nodes_.size(); ++i)
      if (nodes_[i]->port() == port) return int(i);
    return -1;
  }

 private:
  // Every node reports cluster_state:ok and all 16384 slots known.
  bool wait_ok() {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (std::chrono::steady_clock::now() < until) {
      bool ok = true;
      for (auto& n : nodes_) {
        auto r = n->command({"CLUSTER", "INFO"});
        std::string_view t = r.ok() ? reply_text(r->get()) : std::string_view();
        ok = ok && t.find("cluster_state:ok") != std::string_view::npos &&
             t.find("cluster_slots_ok:16384") != std::string_view::npos &&
             t.find("cluster_known_nodes:" + std::to_string(nodes_.size())) !=
                 std::string_view::npos;
      }
      if (ok) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  std::vector<std::unique_ptr<LocalRedis>> nodes_;
};

}  // namespace tierkv::redis::testing
