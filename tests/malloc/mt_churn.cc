// mt_churn.cc -- a multi-threaded C++ program for test_malloc_programs:
// std::thread, new/delete, std::string and std::vector churn, objects
// handed between threads.  Prints a checksum that does not depend on the
// allocator or on scheduling.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

struct Node {
    std::string name;
    std::vector<uint64_t> vals;
};

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

int main(int argc, char **argv)
{
    const int nthreads = 4;
    int rounds = argc > 1 ? std::atoi(argv[1]) : 20000;
    std::mutex mu;
    std::vector<std::unique_ptr<Node>> shared; // handed to other threads
    std::atomic<uint64_t> sum{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < nthreads; t++) {
        ts.emplace_back([&, t] {
            uint64_t local = 0;
            std::vector<std::unique_ptr<Node>> mine;
            for (int i = 0; i < rounds; i++) {
                uint64_t k = mix((uint64_t)t * 1000003u + (uint64_t)i);
                auto n = std::make_unique<Node>();
                n->name = std::string(k % 200 + 1, char('a' + k % 26));
                n->vals.resize(k % 300);
                for (size_t j = 0; j < n->vals.size(); j++)
                    n->vals[j] = k + j;
                if (k % 1000 == 0)
                    n->vals.resize(100000 + k % 50000); // a large block
                mine.push_back(std::move(n));
                if (mine.size() > 64) {
                    std::lock_guard<std::mutex> g(mu);
                    for (auto &m : mine)
                        shared.push_back(std::move(m));
                    mine.clear();
                }
                if (i % 7 == 0) {
                    std::unique_ptr<Node> other;
                    {
                        std::lock_guard<std::mutex> g(mu);
                        if (!shared.empty()) {
                            other = std::move(shared.back());
                            shared.pop_back();
                        }
                    }
                    if (other) { // freed on this thread: cross-thread delete
                        uint64_t h = other->name.size();
                        for (uint64_t v : other->vals)
                            h += v;
                        local += mix(h);
                    }
                }
            }
            for (auto &m : mine) {
                uint64_t h = m->name.size();
                for (uint64_t v : m->vals)
                    h += v;
                local += mix(h);
            }
            sum += local;
        });
    }
    for (auto &t : ts)
        t.join();
    for (auto &m : shared) {
        uint64_t h = m->name.size();
        for (uint64_t v : m->vals)
            h += v;
        sum += mix(h);
    }
    std::printf("checksum %llu\n", (unsigned long long)sum.load());
    return 0;
}
