// A C++ program whose blocks have known memcheck verdicts, each shape with
// a block size of its own so tests/tests/leaks_vs_memcheck.rs can compare
// heapdump's leak class and memcheck's block by block, and whose
// allocations go through libstdc++'s containers so the same test can check
// the names and types heapdump gives them:
//   56 bytes x 20: a list of `new Node`s whose head was dropped
//                                  -> 1 definitely, 19 indirectly lost
//   80 bytes: a leaked Holder      -> definitely lost
//   400 bytes: its std::vector<long>'s buffer   -> indirectly lost
//   1500 bytes: new char[] held only 40 bytes in, by a global -> possibly lost
//   120 bytes: a Registry held by a global      -> still reachable, and so
//              are its std::vector<int> buffer (4096 bytes), its
//              std::map<int, double>'s nodes (48 bytes x 3), its
//              std::make_shared<Widget> block (112 bytes) and its
//              std::string's buffer (101 bytes).
// The globals are raw pointers, so no destructor frees anything before
// memcheck looks. Pointers are dropped through a volatile global so the
// compiler cannot elide the allocations, and the stack is scrubbed before
// exit so no stale copy of a lost pointer remains for either tool to find.
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

struct Node {
  Node *next;
  char name[48];
};

struct Holder {
  std::vector<long> values;
  long id[7];
};

struct Widget {
  long parts[12];
};

struct Registry {
  std::vector<int> ids;
  std::map<int, double> scores;
  std::shared_ptr<Widget> widget;
  std::string name;
};

Registry *registry;
char *middle;
void *volatile sink;

__attribute__((noinline)) void lose_list() {
  Node *head = nullptr;
  for (int i = 0; i < 20; i++) head = new Node{head, {}};
  sink = head;
  sink = nullptr;
}

__attribute__((noinline)) void lose_holder() {
  Holder *holder = new Holder();
  holder->values.reserve(50);
  holder->values.push_back(1);
  sink = holder;
  sink = nullptr;
}

__attribute__((noinline)) void keep_middle() {
  char *p = new char[1500];
  std::memset(p, 0x5a, 1500);
  middle = p + 40;
}

__attribute__((noinline)) void keep_registry() {
  registry = new Registry();
  for (int i = 0; i < 1000; i++) registry->ids.push_back(i);
  for (int i = 0; i < 3; i++) registry->scores[i] = i * 0.5;
  registry->widget = std::make_shared<Widget>();
  registry->name = std::string(100, 'r');
}

__attribute__((noinline)) void scrub() {
  volatile char junk[8192];
  for (unsigned i = 0; i < sizeof junk; i++) junk[i] = 0;
}

int main() {
  lose_list();
  lose_holder();
  keep_middle();
  keep_registry();
  scrub();
  return 0;
}
