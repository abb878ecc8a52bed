/** Jest runs the TypeScript tests through ts-jest; every test file lives in test/. */
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  testTimeout: 120000,
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: { isolatedModules: true, esModuleInterop: true, strict: true, types: ['node', 'jest'] }, diagnostics: false }] },
};
