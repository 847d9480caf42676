#include <cstdio>
int main() { std::puts("svoo: commands arrive with the core issue"); return 0; }
