// IsLoopbackAddress decides by resolved address, not by spelling.
#include <netdb.h>
#include <sys/socket.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/testing/status_matchers.h"

namespace reprod::server {
namespace {

using ::reprod::testing::IsOkAndHolds;
using ::reprod::testing::StatusIs;
using ::testing::HasSubstr;

// True when `host` resolves on this machine (a sandbox may lack IPv6).
bool Resolves(const char* host) {
  addrinfo* found = nullptr;
  const bool ok = getaddrinfo(host, nullptr, nullptr, &found) == 0;
  if (found != nullptr) freeaddrinfo(found);
  return ok;
}

TEST(Loopback, LoopbackAddressesAndLocalhost) {
  EXPECT_THAT(IsLoopbackAddress("127.0.0.1:50051"), IsOkAndHolds(true));
  EXPECT_THAT(IsLoopbackAddress("127.3.2.1:0"), IsOkAndHolds(true));
  EXPECT_THAT(IsLoopbackAddress("[::1]:50051"), IsOkAndHolds(true));
  EXPECT_THAT(IsLoopbackAddress("[::ffff:127.0.0.1]:1"), IsOkAndHolds(true));
  ASSERT_TRUE(Resolves("localhost"));
  EXPECT_THAT(IsLoopbackAddress("localhost:50051"), IsOkAndHolds(true));
}

TEST(Loopback, NamesThatOnlyLookLoopbackAreNot) {
  // Does not resolve here (.example is reserved, and tests run offline); a
  // string-prefix check would have taken it for loopback.
  ASSERT_FALSE(Resolves("127.attacker.example"));
  EXPECT_THAT(IsLoopbackAddress("127.attacker.example:50051"), IsOkAndHolds(false));
  EXPECT_THAT(IsLoopbackAddress("0.0.0.0:50051"), IsOkAndHolds(false));
  EXPECT_THAT(IsLoopbackAddress("[::]:50051"), IsOkAndHolds(false));
  EXPECT_THAT(IsLoopbackAddress("10.0.0.1:50051"), IsOkAndHolds(false));
  EXPECT_THAT(IsLoopbackAddress("[::ffff:10.0.0.1]:1"), IsOkAndHolds(false));
  EXPECT_THAT(IsLoopbackAddress(":50051"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("HOST:PORT")));
  EXPECT_THAT(IsLoopbackAddress("localhost"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("HOST:PORT")));
}

}  // namespace
}  // namespace reprod::server
