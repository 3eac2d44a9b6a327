/** The package version, in one place (package.json repeats it for npm). */
export const VERSION = "0.1.0";
