// android_demo: the Android app (:app) and its platform-free logic (:core, plain Java 17,
// unit-tested without Android: see core/test.sh).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}
dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()       // com.google.ai.edge.litert
        mavenCentral()
    }
}
rootProject.name = "embg-android-demo"
include(":app", ":core")
